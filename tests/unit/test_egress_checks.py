"""What the forward proxy checks of what it lets through, on real sockets on loopback: a tunnel's
TLS ClientHello must name the host the CONNECT named before anything is connected upstream, and
a plain request's ``Host`` must name its target.

The helpers (the proxy on loopback, the stand-in upstreams, a self-signed certificate) are
test_egress_proxy's.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from pathlib import Path

import pytest

from clawhq.egress import proxy as proxy_module
from tests.unit.test_egress_proxy import (
    RawUpstream,
    Upstream,
    agent,
    auth,
    certificate,
    exchange,
    running,
    server_context,
    tunnel,
)
from tests.unit.test_egress_tls import body, hello, real_hello, records, sni

TOKEN = "chqllm_test-token"


@pytest.fixture(scope="module")
def tls_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """allowed.test's self-signed certificate (with its key) and the client's trust in it."""
    pem = certificate(tmp_path_factory.mktemp("tls"))
    return pem, pem


async def open_tunnel(port: int, target: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A CONNECT through the proxy, its 200 read; what is sent next is up to the test."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"CONNECT {target} HTTP/1.1\r\n".encode() + auth() + b"\r\n")
    await writer.drain()
    answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert answer.startswith(b"HTTP/1.1 200 Connection established"), answer
    return reader, writer


async def closed(reader: asyncio.StreamReader) -> bool:
    """Whether the proxy ends the tunnel (nothing more arrives, then end of stream)."""
    try:
        return await asyncio.wait_for(reader.read(), 5) == b""
    except ConnectionError:
        return True


def test_a_matching_hello_opens_the_tunnel_end_to_end(tls_pair: tuple[Path, Path]) -> None:
    async def scenario() -> None:
        pem, trust = tls_pair
        async with Upstream(server_context(pem)) as up:
            who = agent("allowlist", f"allowed.test:{up.port}")
            async with running({TOKEN: who}) as (proxy, seen):
                # The CONNECT's host in capitals and with a trailing dot: still the same host.
                reader, writer = await tunnel(
                    proxy.port, f"Allowed.TEST.:{up.port}", "allowed.test", trust
                )
                writer.write(b"GET /inside HTTP/1.1\r\nHost: allowed.test\r\n\r\n")
                answer = await asyncio.wait_for(reader.read(), 5)
                writer.close()
        assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b"hello")
        assert up.server_names == ["allowed.test"] and up.connections == 1
        assert up.requests[0].startswith(b"GET /inside HTTP/1.1\r\n")
        assert [event[2] for event in seen] == ["allowed"]

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("first", "verdict"),
    [
        pytest.param(real_hello("other.test"), "sni_mismatch", id="another host"),
        pytest.param(real_hello("allowed.test.evil"), "sni_mismatch", id="a longer name"),
        pytest.param(real_hello(None), "sni_missing", id="no SNI"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n", "tls_malformed", id="HTTP"),
        pytest.param(
            hello(body(None) + b"\x00\x40" + sni(b"allowed.test")), "tls_malformed", id="lying"
        ),
        pytest.param(
            records(b"\x01\x00\x3e\x80" + b"\x00" * 16000, size=1), "tls_malformed", id="endless"
        ),
        pytest.param(real_hello("allowed.test")[:50], "no_client_hello", id="cut short"),
    ],
)
def test_a_tunnel_without_a_hello_naming_its_host_is_closed_before_anything_is_reached(
    first: bytes, verdict: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        async with Upstream() as up:
            who = agent("allowlist", f"allowed.test:{up.port}")
            async with running({TOKEN: who}) as (proxy, seen):
                reader, writer = await open_tunnel(proxy.port, f"allowed.test:{up.port}")
                writer.write(first)
                await writer.drain()
                if verdict == "no_client_hello":
                    writer.write_eof()
                assert await closed(reader)
                writer.close()
        assert up.connections == 0  # the destination never heard of it
        assert [event[2] for event in seen] == [verdict]

    with caplog.at_level(logging.INFO, logger="clawhq.egress"):
        asyncio.run(scenario())
    assert f"refused ({verdict})" in caplog.text


def test_the_refusal_says_which_name_the_hello_gave(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with (
            Upstream() as up,
            running({TOKEN: agent("allowlist", f"allowed.test:{up.port}")}) as (proxy, _),
        ):
            reader, writer = await open_tunnel(proxy.port, f"allowed.test:{up.port}")
            writer.write(real_hello("Other.Test"))
            assert await closed(reader)
            writer.close()

    with caplog.at_level(logging.INFO, logger="clawhq.egress"):
        asyncio.run(scenario())
    assert "refused (sni_mismatch): the TLS ClientHello names other.test, not allowed.test" in (
        caplog.text
    )


def test_a_tunnel_to_an_address_is_refused_without_sni() -> None:
    """The allowlist names hosts: a CONNECT to an address sends no SNI (RFC 6066), so even an
    address the operator listed gets no tunnel."""

    async def scenario() -> None:
        async with Upstream() as up:
            who = agent("allowlist", f"127.0.0.1:{up.port}")
            async with running({TOKEN: who}) as (proxy, seen):
                reader, writer = await open_tunnel(proxy.port, f"127.0.0.1:{up.port}")
                writer.write(real_hello("127.0.0.1"))  # Python's client sends no SNI for it
                assert await closed(reader)
                writer.close()
        assert up.connections == 0
        assert [event[2] for event in seen] == ["sni_missing"]

    asyncio.run(scenario())


def test_a_hello_in_many_records_and_reads_is_passed_on_byte_for_byte() -> None:
    message = real_hello("allowed.test")[5:]
    data = records(message, 50)  # the hello in 50-byte records
    after = b"\x17\x03\x03" + struct.pack("!H", 4) + b"data"

    async def scenario() -> None:
        async with RawUpstream() as up:
            who = agent("allowlist", f"allowed.test:{up.port}")
            async with running({TOKEN: who}) as (proxy, seen):
                reader, writer = await open_tunnel(proxy.port, f"allowed.test:{up.port}")
                for piece in (data[:3], data[3:200], data[200:], after):
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(0.05)
                writer.write_eof()
                assert await closed(reader)
                writer.close()
        assert up.raw == [data + after]
        assert [event[2] for event in seen] == ["allowed"]

    asyncio.run(scenario())


def test_a_tunnel_that_sends_nothing_is_closed_after_the_hello_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(proxy_module, "HELLO_SECONDS", 0.2)

    async def scenario() -> None:
        async with Upstream() as up:
            who = agent("allowlist", f"allowed.test:{up.port}")
            async with running({TOKEN: who}) as (proxy, seen):
                reader, writer = await open_tunnel(proxy.port, f"allowed.test:{up.port}")
                started = asyncio.get_running_loop().time()
                assert await closed(reader)
                assert asyncio.get_running_loop().time() - started < 3
                writer.close()
        assert up.connections == 0
        assert [event[2] for event in seen] == ["no_client_hello"]

    asyncio.run(scenario())


# -- plain HTTP: the Host header ----------------------------------------------------------------


def plain(target: str, *headers: str) -> bytes:
    lines = "".join(f"{header}\r\n" for header in headers)
    return f"GET {target} HTTP/1.1\r\n{lines}".encode() + auth() + b"\r\n"


@pytest.mark.parametrize(
    "host",
    [
        "Host: other.test",
        "Host: allowed.test:81",  # the target's port is the stand-in's
        "Host: allowed.test.evil",
        "Host: allowed.test@other.test",
        "Host: ",
        "Host: allowed.test:x",
        "Host: [::1]",
        "Host: allowed.test\r\nHost: other.test",  # two of them
    ],
)
def test_a_plain_request_whose_host_is_not_its_target_is_refused(host: str) -> None:
    async def scenario() -> None:
        async with Upstream() as up:
            who = agent("allowlist", f"allowed.test:{up.port}")
            async with running({TOKEN: who}) as (proxy, seen):
                answer = await exchange(proxy.port, plain(f"http://allowed.test:{up.port}/", host))
        assert answer.startswith(b"HTTP/1.1 403 host_mismatch\r\n"), answer
        assert b"X-ClawHQ-Error: egress_host_mismatch" in answer
        assert up.connections == 0
        assert [event[2] for event in seen] == ["host_mismatch"]

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "host", ["Host: allowed.test", "Host: Allowed.TEST.", "Host: allowed.test:{port}"]
)
def test_a_plain_request_naming_its_target_goes_through(host: str) -> None:
    async def scenario() -> None:
        async with Upstream() as up:
            who = agent("allowlist", f"allowed.test:{up.port}")
            async with running({TOKEN: who}) as (proxy, seen):
                request = plain(f"http://allowed.test:{up.port}/", host.format(port=up.port))
                answer = await exchange(proxy.port, request)
        assert answer.startswith(b"HTTP/1.1 200 OK"), answer
        assert up.requests[0].count(b"\r\nHost: ") == 1
        assert [event[2] for event in seen] == ["allowed"]

    asyncio.run(scenario())


def test_a_plain_request_without_host_is_sent_with_its_targets() -> None:
    async def scenario() -> None:
        async with Upstream() as up:
            who = agent("allowlist", f"allowed.test:{up.port}")
            async with running({TOKEN: who}) as (proxy, _):
                answer = await exchange(proxy.port, plain(f"http://allowed.test:{up.port}/p"))
        assert answer.startswith(b"HTTP/1.1 200 OK"), answer
        assert up.requests[0].startswith(
            f"GET /p HTTP/1.1\r\nHost: allowed.test:{up.port}\r\n".encode()
        )

    asyncio.run(scenario())
