"""ClawHQ's forward proxy for agents: who may go where, on real sockets on loopback.

The proxy's address check refuses loopback always; these tests swap it for one that lets the
test's own loopback servers through, and test the real check on its own.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from ipaddress import IPv4Address, IPv4Network, ip_address
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from clawhq.egress.policy import (
    Pattern,
    address_problem,
    judge,
    normal_host,
    patterns_for,
)
from clawhq.egress.proxy import EgressAgent, EgressProxy

TOKEN = "chqllm_test-token"
DENIED = (IPv4Network("10.0.0.0/8"),)


# -- the policy, pure ---------------------------------------------------------------------------


def test_patterns_match_hosts_subdomains_and_ports() -> None:
    exact, wild = Pattern.parse("api.telegram.org"), Pattern.parse("*.slack.com")
    port = Pattern.parse("203.0.113.7:8080")
    assert exact.matches("api.telegram.org", 443) and exact.matches("api.telegram.org", 80)
    assert not exact.matches("api.telegram.org", 22)  # no port given: 443 and 80 only
    assert not exact.matches("evil-api.telegram.org", 443)
    assert wild.matches("wss-primary.slack.com", 443)
    assert not wild.matches("slack.com", 443)  # "*." is subdomains only
    assert not wild.matches("slack.com.evil.net", 443)
    assert port.matches("203.0.113.7", 8080) and not port.matches("203.0.113.7", 443)


def test_an_agent_may_reach_its_own_channels_and_the_operators_list_only() -> None:
    patterns = patterns_for(["telegram"], ["example.org"])
    assert judge("api.telegram.org", 443, patterns).allowed
    assert judge("example.org", 443, patterns).allowed
    assert not judge("slack.com", 443, patterns).allowed  # not one of its channels
    assert not judge("api.openai.com", 443, patterns).allowed  # models go via ClawHQ
    assert judge("203.0.113.7", 443, patterns_for([], ["203.0.113.7"])).by_address


def test_names_never_lead_to_private_loopback_or_metadata_addresses() -> None:
    def problem(text: str, named: bool = False) -> str | None:
        return address_problem(ip_address(text), DENIED, named=named)

    assert problem("93.184.216.34") is None
    for inner in ("127.0.0.1", "169.254.169.254", "10.1.2.3", "192.168.1.1", "::1", "0.0.0.0"):
        assert problem(inner), inner
    assert problem("198.51.100.2", named=True) is None  # the operator named that address
    assert problem("127.0.0.1", named=True) and problem("169.254.169.254", named=True)
    assert normal_host("API.Example.COM.") == "api.example.com"
    assert normal_host("a@b") is None and normal_host("") is None


# -- the proxy, on loopback ---------------------------------------------------------------------


class Upstream:
    """A server on loopback that counts the connections it gets and records what reached it:
    the first bytes of each (``raw``), or, with ``tls`` (a server context), the request it
    reads after a TLS handshake and the server name the client asked for."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[bytes] = []
        self.raw: list[bytes] = []
        self.server_names: list[str | None] = []
        self.connections = 0
        self.port = 0
        self._tls = tls
        if tls is not None:
            tls.sni_callback = lambda _obj, name, _ctx: self.server_names.append(name)

    async def __aenter__(self) -> Upstream:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            if self._raw_only:
                self.raw.append(await asyncio.wait_for(reader.read(), 5))
                writer.close()
                return
            if self._tls is not None:
                await writer.start_tls(self._tls)
            head = await reader.readuntil(b"\r\n\r\n")
            self.requests.append(head)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
            await writer.drain()
            writer.close()

        self._server = await asyncio.start_server(serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    _raw_only = False

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()


class RawUpstream(Upstream):
    """Records the first bytes a connection carries, and answers nothing."""

    _raw_only = True


def certificate(directory: Path, name: str = "allowed.test") -> Path:
    """A self-signed certificate and its key for ``name``, in one PEM file."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem = directory / f"{name}.pem"
    pem.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return pem


@pytest.fixture(scope="module")
def tls_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A server certificate for allowed.test and the client's trust in it (the same file)."""
    pem = certificate(tmp_path_factory.mktemp("tls"))
    return pem, pem


def server_context(pem: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pem)
    return context


@asynccontextmanager
async def running(agents: dict[str, EgressAgent]) -> AsyncIterator[tuple[EgressProxy, list]]:
    seen: list[tuple[str, str, str]] = []

    async def identify(token: str) -> EgressAgent | None:
        return agents.get(token)

    def loopback_allowed(address: IPv4Address, denied: object, *, named: bool) -> str | None:
        return None if address.is_loopback else "not the test's"

    proxy = EgressProxy(
        identify,
        DENIED,
        record=lambda *event: seen.append(event),
        check=loopback_allowed,
        resolve=lambda host, port: _resolved(host),
    )
    await proxy.start("127.0.0.1", 0)
    try:
        yield proxy, seen
    finally:
        await proxy.aclose()


async def _resolved(host: str) -> list[str]:
    return ["127.0.0.1"] if host == "allowed.test" else []


def auth(token: str = TOKEN) -> bytes:
    return b"Proxy-Authorization: Basic " + base64.b64encode(f"agent:{token}".encode()) + b"\r\n"


async def exchange(port: int, request: bytes, then: bytes = b"") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    if then:
        answer = await reader.readuntil(b"\r\n\r\n")
        writer.write(then)
        await writer.drain()
        rest = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        return answer + rest
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return data


def agent(policy: str = "allowlist", *hosts: str) -> EgressAgent:
    return EgressAgent("agent-1", policy, tuple(Pattern.parse(h) for h in hosts))


async def tunnel(
    port: int, target: str, server_name: str, trust: Path
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A CONNECT through the proxy, then a real TLS handshake inside it, as ``server_name``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"CONNECT {target} HTTP/1.1\r\n".encode() + auth() + b"\r\n")
    await writer.drain()
    answer = await reader.readuntil(b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 Connection established"), answer
    await writer.start_tls(ssl.create_default_context(cafile=trust), server_hostname=server_name)
    return reader, writer


def test_an_allowed_destination_is_reached_by_connect_and_by_absolute_uri(
    tls_pair: tuple[Path, Path],
) -> None:
    async def scenario() -> None:
        pem, trust = tls_pair
        async with Upstream(server_context(pem)) as tls_up, Upstream() as up:
            allowed = agent("allowlist", f"allowed.test:{tls_up.port}", f"allowed.test:{up.port}")
            async with running({TOKEN: allowed}) as (proxy, seen):
                # A tunnel: a real TLS handshake with the stand-in, end to end.
                reader, writer = await tunnel(
                    proxy.port, f"allowed.test:{tls_up.port}", "allowed.test", trust
                )
                writer.write(b"GET /x HTTP/1.1\r\nHost: allowed.test\r\n\r\n")
                answer = await asyncio.wait_for(reader.read(), 5)
                writer.close()
                assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b"hello")
                plain = (
                    (
                        f"GET http://allowed.test:{up.port}/y?q=1 HTTP/1.1\r\n"
                        "Host: allowed.test\r\n"
                    ).encode()
                    + auth()
                    + b"Proxy-Connection: keep-alive\r\n\r\n"
                )
                answer = await exchange(proxy.port, plain)
                assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b"hello")
        assert tls_up.server_names == ["allowed.test"]
        assert tls_up.requests[0].startswith(b"GET /x HTTP/1.1\r\n")
        # What arrived upstream: origin-form, and nothing of the agent's token.
        assert up.requests[0].startswith(b"GET /y?q=1 HTTP/1.1\r\n")
        assert b"proxy-" not in up.requests[0].lower() and TOKEN.encode() not in up.requests[0]
        assert b"Connection: close" in up.requests[0]
        assert [event[2] for event in seen] == ["allowed", "allowed"]
        assert seen[0][:2] == ("agent-1", f"allowed.test:{tls_up.port}")

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("token", "policy", "hosts", "target", "status", "verdict"),
    [
        (None, "allowlist", "allowed.test:{port}", "allowed.test:{port}", 407, "unauthenticated"),
        (
            "chqllm_x",
            "allowlist",
            "allowed.test:{port}",
            "allowed.test:{port}",
            407,
            "unauthenticated",
        ),
        (TOKEN, "none", "allowed.test:{port}", "allowed.test:{port}", 403, "policy_none"),
        (TOKEN, "allowlist", "other.test", "allowed.test:{port}", 403, "not_allowed"),
        (TOKEN, "allowlist", "*.test", "nowhere.test:22", 403, "not_allowed"),
        (TOKEN, "allowlist", "nowhere.test", "nowhere.test:443", 502, "unresolved"),
        (TOKEN, "allowlist", "allowed.test", "no-port", 400, "bad_target"),
    ],
)
def test_refusals_are_answered_and_recorded_and_nothing_is_reached(
    token: str | None, policy: str, hosts: str, target: str, status: int, verdict: str
) -> None:
    async def scenario() -> None:
        async with Upstream() as up:
            who = agent(policy, hosts.format(port=up.port))
            async with running({TOKEN: who}) as (proxy, seen):
                request = f"CONNECT {target.format(port=up.port)} HTTP/1.1\r\n".encode()
                request += (auth(token) if token else b"") + b"\r\n"
                answer = await exchange(proxy.port, request)
        assert answer.split(b" ")[1] == str(status).encode(), answer
        assert b"X-ClawHQ-Error: egress_" + verdict.encode() in answer
        if status == 407:
            assert b'Proxy-Authenticate: Basic realm="clawhq"' in answer
        assert up.requests == []
        assert [event[2] for event in seen] == [verdict]

    asyncio.run(scenario())


def test_a_client_that_sends_no_head_or_a_huge_one_is_cut_off() -> None:
    async def scenario() -> None:
        async with running({}) as (proxy, _):
            answer = await exchange(proxy.port, b"GET http://x/ HTTP/1.1\r\nX: " + b"a" * 40_000)
            assert answer.startswith(b"HTTP/1.1 431")
            answer = await exchange(proxy.port, b"\x16\x03\x01 not http\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 400")

    asyncio.run(scenario())


def test_when_agents_cannot_be_looked_up_the_proxy_says_so_and_lets_nobody_out() -> None:
    async def scenario() -> None:
        async def broken(token: str) -> EgressAgent | None:
            raise RuntimeError("database away")

        proxy = EgressProxy(broken, DENIED, check=lambda *a, **k: None)
        await proxy.start("127.0.0.1", 0)
        try:
            request = b"CONNECT allowed.test:443 HTTP/1.1\r\n" + auth() + b"\r\n"
            answer = await exchange(proxy.port, request)
            assert answer.startswith(b"HTTP/1.1 503")
            assert b"X-ClawHQ-Error: egress_unavailable" in answer
        finally:
            await proxy.aclose()

    asyncio.run(scenario())
