"""The server name a TLS client asks for, read from its ClientHello before anything is relayed.
Pure.

The forward proxy lets an agent open a tunnel to ``host:port`` only when the TLS ClientHello it
sends first names that same host (SNI, RFC 6066), so an allowed name cannot carry a handshake
meant for another site at the same address. :func:`client_hello` reads the hello out of the
bytes received so far: TLS records (RFC 8446 §5.1) of the handshake type, reassembled, holding
one handshake message of type ``client_hello`` (§4.1.2), whose extensions are walked for
``server_name`` (type 0). Every length is checked against what is actually there; anything
that is not a well-formed hello raises :class:`Malformed`, never another exception.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

#: The most bytes of records read for one hello (its records' headers included).
HELLO_LIMIT = 16 * 1024
#: The largest record fragment TLS allows (2^14).
RECORD_LIMIT = 16 * 1024
HANDSHAKE = 22
CLIENT_HELLO = 1
SERVER_NAME = 0
HOST_NAME = 0
#: What a DNS host name (or an address written as text) may be made of.
_NAME_CHARS = frozenset(string.ascii_letters + string.digits + "-._")


class Malformed(ValueError):
    """The bytes are not the start of a well-formed TLS ClientHello (or it is too large)."""


@dataclass(frozen=True)
class ClientHello:
    #: The ``host_name`` of its ``server_name`` extension, as sent; ``None`` without one.
    server_name: str | None


class _Cursor:
    """Reads a byte string front to back; reading past its end raises :class:`Malformed`."""

    def __init__(self, data: bytes) -> None:
        self._data, self._at = data, 0

    @property
    def left(self) -> int:
        return len(self._data) - self._at

    def take(self, n: int) -> bytes:
        if n > self.left:
            raise Malformed("a length runs past the end of the hello")
        chunk = self._data[self._at : self._at + n]
        self._at += n
        return chunk

    def number(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def block(self, size: int) -> _Cursor:
        """The next ``size``-byte length and the bytes it counts, as a cursor of their own."""
        return _Cursor(self.take(self.number(size)))


def client_hello(data: bytes, limit: int = HELLO_LIMIT) -> ClientHello | None:
    """The ClientHello at the start of ``data``; ``None`` while more bytes are needed.

    Raises :class:`Malformed` when ``data`` cannot begin one, or when the hello would need
    more than ``limit`` bytes of records.
    """
    message = bytearray()
    at = 0
    while True:
        if len(message) >= 4:
            if message[0] != CLIENT_HELLO:
                raise Malformed("the first handshake message is not a ClientHello")
            size = int.from_bytes(message[1:4], "big")
            fewest_records = -(-(4 + size) // RECORD_LIMIT)
            if 5 * fewest_records + 4 + size > limit:
                raise Malformed("the ClientHello is larger than the proxy reads")
            if len(message) >= 4 + size:
                return _parse(bytes(message[4 : 4 + size]))
        if at + 5 > limit:
            raise Malformed("the ClientHello is larger than the proxy reads")
        header = data[at : at + 5]
        if header and header[0] != HANDSHAKE:
            raise Malformed("not a TLS handshake record")
        if len(header) >= 2 and header[1] != 3:
            raise Malformed("not a TLS record version")
        if len(header) < 5:
            return None
        length = int.from_bytes(header[3:5], "big")
        if not 0 < length <= RECORD_LIMIT:
            raise Malformed("a record's length is out of range")
        if at + 5 + length > limit:
            raise Malformed("the ClientHello is larger than the proxy reads")
        if len(data) < at + 5 + length:
            return None
        message += data[at + 5 : at + 5 + length]
        at += 5 + length


def _parse(body: bytes) -> ClientHello:
    hello = _Cursor(body)
    hello.take(2 + 32)  # legacy_version, random
    if hello.block(1).left > 32:
        raise Malformed("a session id is at most 32 bytes")
    suites = hello.block(2)
    if suites.left < 2 or suites.left % 2:
        raise Malformed("cipher suites are pairs of bytes, at least one")
    if hello.block(1).left < 1:
        raise Malformed("no compression method")
    if not hello.left:
        return ClientHello(None)  # no extensions at all (TLS 1.2 and before allow it)
    extensions = hello.block(2)
    if hello.left:
        raise Malformed("bytes after the extensions")
    name: str | None = None
    seen: set[int] = set()
    while extensions.left:
        kind, data = extensions.number(2), extensions.block(2)
        if kind in seen:
            raise Malformed("an extension appears twice")
        seen.add(kind)
        if kind == SERVER_NAME:
            name = _host_name(data)
    return ClientHello(name)


def _host_name(extension: _Cursor) -> str:
    """The one ``host_name`` of a ``server_name`` extension (no other name type exists)."""
    names = extension.block(2)
    if extension.left:
        raise Malformed("bytes after the server name list")
    if names.number(1) != HOST_NAME:
        raise Malformed("a server name that is not a host name")
    raw = names.block(2)
    name = raw.take(raw.left)
    if names.left:
        raise Malformed("more than one server name")
    if not 0 < len(name) <= 255 or not set(name.decode("latin-1")) <= _NAME_CHARS:
        raise Malformed("a server name that is not a host name")
    return name.decode("ascii")


def names_match(server_name: str, host: str) -> bool:
    """Whether a ClientHello's server name is ``host`` (case and one trailing dot aside)."""
    return server_name.lower().removesuffix(".") == host.lower().removesuffix(".")
