"""The proxy's ClientHello reader: real hellos from Python's ssl module, and hostile ones.

A hello is refused by raising :class:`Malformed`; no input, however it lies, raises anything
else, and a hello cut anywhere only ever asks for more bytes.
"""

from __future__ import annotations

import ssl
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clawhq.egress.tls import (
    HELLO_LIMIT,
    ClientHello,
    Malformed,
    client_hello,
    names_match,
)


def real_hello(server_name: str | None, *, tls13: bool = True) -> bytes:
    """The first bytes Python's TLS client sends (``server_name`` None: it sends no SNI)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if not tls13:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def records(message: bytes, size: int = 16384, version: bytes = b"\x03\x01") -> bytes:
    """A handshake message as TLS records of at most ``size`` bytes each."""
    return b"".join(
        bytes([22]) + version + struct.pack("!H", len(chunk)) + chunk
        for chunk in (message[i : i + size] for i in range(0, len(message), size))
    )


def vector(data: bytes, size: int) -> bytes:
    return len(data).to_bytes(size, "big") + data


def extension(kind: int, data: bytes) -> bytes:
    return struct.pack("!H", kind) + vector(data, 2)


def sni(*names: bytes, kind: int = 0) -> bytes:
    return extension(0, vector(b"".join(bytes([kind]) + vector(n, 2) for n in names), 2))


def body(
    extensions: bytes | None = b"",
    *,
    session: bytes = b"\x11" * 32,
    suites: bytes = b"\x13\x01\x13\x02",
    compression: bytes = b"\x00",
) -> bytes:
    """A ClientHello body built field by field (``extensions`` None: no extensions block)."""
    out = b"\x03\x03" + b"\x42" * 32 + vector(session, 1) + vector(suites, 2)
    out += vector(compression, 1)
    return out if extensions is None else out + vector(extensions, 2)


def hello(content: bytes, kind: int = 1) -> bytes:
    """A handshake message of type ``kind`` around ``content``, in one record."""
    return records(bytes([kind]) + vector(content, 3))


# -- real hellos --------------------------------------------------------------------------------


@pytest.mark.parametrize("tls13", [True, False])
def test_the_server_name_of_a_real_hello_is_read(tls13: bool) -> None:
    data = real_hello("api.Telegram.org", tls13=tls13)
    assert client_hello(data) == ClientHello("api.Telegram.org")


def test_a_real_hello_without_sni_has_no_server_name() -> None:
    assert client_hello(real_hello(None)) == ClientHello(None)
    # An address is never sent as a server name (RFC 6066), so a CONNECT to one has none.
    assert client_hello(real_hello("203.0.113.7")) == ClientHello(None)


def test_a_hello_cut_anywhere_asks_for_more_and_extra_bytes_are_left_alone() -> None:
    data = real_hello("allowed.example")
    for end in range(len(data)):
        assert client_hello(data[:end]) is None, end
    assert client_hello(data + b"\x17\x03\x03\x00\x05early") == ClientHello("allowed.example")


@pytest.mark.parametrize("size", [1, 7, 100, 511])
def test_a_hello_spread_over_many_records_is_put_together(size: int) -> None:
    message = real_hello("allowed.example")[5:]  # the handshake message, out of its record
    data = records(message, size)
    assert client_hello(data) == ClientHello("allowed.example")
    assert all(client_hello(data[:end]) is None for end in range(0, len(data), 97))


def test_a_hello_up_to_the_limit_is_read_and_a_larger_one_refused() -> None:
    name = sni(b"big.example")
    room = HELLO_LIMIT - len(body(name)) - 4 - 2 * 5 - 4  # two records' headers, one extension
    padding = extension(21, b"\x00" * room)
    data = records(b"\x01" + vector(body(name + padding), 3), 8192)
    assert len(data) == HELLO_LIMIT
    assert client_hello(data) == ClientHello("big.example")
    bigger = records(b"\x01" + vector(body(name + padding + extension(22, b"")), 3), 8192)
    with pytest.raises(Malformed, match="larger"):
        client_hello(bigger)
    with pytest.raises(Malformed, match="larger"):  # known from the handshake header alone
        client_hello(b"\x16\x03\x01\x00\x04\x01\x00\xff\xff")
    # Tiny records that never finish a hello are refused at the limit, not read forever.
    endless = records(b"\x01\x00\x3e\x80" + b"\x00" * 16000, size=1)
    with pytest.raises(Malformed, match="larger"):
        client_hello(endless)


def test_names_match_without_case_or_a_trailing_dot() -> None:
    assert names_match("API.Example.com.", "api.example.com")
    assert names_match("api.example.com", "api.example.com.")
    assert not names_match("other.example", "allowed.example")
    assert not names_match("allowed.example.evil", "allowed.example")
    assert not names_match("", "allowed.example")


# -- hostile input ------------------------------------------------------------------------------


def test_hand_built_hellos_parse() -> None:
    assert client_hello(hello(body(sni(b"a.example")))) == ClientHello("a.example")
    assert client_hello(hello(body(None))) == ClientHello(None)  # no extensions block
    assert client_hello(hello(body(extension(43, b"\x02\x03\x04")))) == ClientHello(None)
    assert client_hello(hello(body(sni(b"a.example"), session=b""))) == ClientHello("a.example")


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"GET / HTTP/1.1\r\n\r\n", id="plain HTTP"),
        pytest.param(b"\x80\x2e\x01\x00\x02", id="SSLv2 hello"),
        pytest.param(b"\x17\x03\x03\x00\x10" + b"\x00" * 16, id="application data record"),
        pytest.param(b"\x16\x02\x00\x00\x10", id="record version not 3.x"),
        pytest.param(b"\x16\x03\x01\x00\x00", id="empty record"),
        pytest.param(b"\x16\x03\x01\x40\x01", id="record over 2^14"),
        pytest.param(hello(body(sni(b"a.example")), kind=2), id="server hello"),
        pytest.param(hello(b"\x03\x03"), id="truncated body"),
        pytest.param(hello(body(sni(b"a.example"), session=b"\x00" * 33)), id="session id > 32"),
        pytest.param(hello(body(b"", suites=b"")), id="no cipher suites"),
        pytest.param(hello(body(b"", suites=b"\x13\x01\x13")), id="odd cipher suites"),
        pytest.param(hello(body(b"", compression=b"")), id="no compression"),
        pytest.param(hello(body(None) + b"\x00\x40" + sni(b"a.example")), id="lying extensions"),
        pytest.param(
            records(b"\x01" + (40).to_bytes(3, "big") + body(sni(b"a.example"))),
            id="handshake length shorter than its body",
        ),
        pytest.param(hello(body(sni(b"a.example")) + b"\x00"), id="bytes after extensions"),
        pytest.param(hello(body(b"\x00\x00\x00\x09abc")), id="extension runs past the end"),
        pytest.param(hello(body(sni(b"a.example") + sni(b"b.example"))), id="two sni extensions"),
        pytest.param(hello(body(sni(b"a.example", b"b.example"))), id="two host names"),
        pytest.param(hello(body(sni(b"a.example", kind=1))), id="not a host name"),
        pytest.param(hello(body(sni(b""))), id="empty host name"),
        pytest.param(hello(body(sni("bücher.example".encode()))), id="not ASCII"),
        pytest.param(hello(body(sni(b"a.example\r\nX: y"))), id="control characters"),
        pytest.param(hello(body(sni(b"a" * 256))), id="name too long"),
        pytest.param(hello(body(extension(0, b""))), id="empty server_name extension"),
        pytest.param(hello(body(extension(0, vector(b"", 2)))), id="empty server name list"),
        pytest.param(hello(body(extension(0, vector(b"\x00\x00\x09ab", 2)))), id="name lies"),
        pytest.param(hello(body(extension(0, vector(b"\x00\x00\x01a", 2) + b"x"))), id="tail"),
    ],
)
def test_malformed_hellos_are_refused(data: bytes) -> None:
    with pytest.raises(Malformed):
        client_hello(data)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_never_raise_anything_else(data: bytes) -> None:
    with_header = b"\x16\x03\x01" + struct.pack("!H", len(data)) + data
    for candidate in (data, with_header, hello(data), hello(body(data))):
        try:
            found = client_hello(candidate)
        except Malformed:
            continue
        assert found is None or isinstance(found, ClientHello)


_REAL = real_hello("allowed.example")


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(_REAL) - 1), st.integers(0, 255)), max_size=8))
def test_a_real_hello_with_bytes_changed_never_raises_anything_else(
    changes: list[tuple[int, int]],
) -> None:
    data = bytearray(_REAL)
    for at, value in changes:
        data[at] = value
    try:
        found = client_hello(bytes(data))
    except Malformed:
        return
    assert found is None or found.server_name is None or found.server_name.isascii()
