"""ClawHQ's forward proxy: the only way out for agents under the ``allowlist`` egress policy.

It speaks the two forms of HTTP proxying clients use: ``CONNECT host:port`` (a tunnel, for
TLS and WebSockets over TLS) and an absolute-URI request (``GET http://host/path``, plain HTTP;
sent on with ``Connection: close``, one request per connection). An agent proves who it is with
``Proxy-Authorization: Basic`` whose password is its ClawHQ LLM token; the token names the
agent, its owner's plan's policy and its channels, read at every connection, so a stop or a
plan change takes effect on the next one. Every destination is logged with the agent's id
(``clawhq.egress``) and counted (``clawhq_egress_connections_total``).

What goes through is checked, not only where: a tunnel is answered 200, then the client's TLS
ClientHello is read (:mod:`clawhq.egress.tls`) and the destination is connected to only if the
hello's server name (SNI) is the CONNECT's host; otherwise the tunnel is closed, refused like
any other connection (``sni_mismatch``, ``sni_missing``, ``tls_malformed``,
``no_client_hello``). A plain request's ``Host`` must name its target (``host_mismatch``).

What it never does: connect anywhere not on the agent's list, follow a name to a private or
loopback address (see :mod:`clawhq.egress.policy`), read more than a bounded request head or
ClientHello, or keep a silent connection past its idle limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Network

from clawhq.egress.head import (
    HEAD_LIMIT,
    Head,
    answer,
    check_host,
    destination,
    origin_request,
    read_head,
    token_of,
)
from clawhq.egress.policy import Pattern, address_problem, judge, literal_address
from clawhq.egress.tls import HELLO_LIMIT, Malformed, client_hello, names_match
from clawhq.errors import EgressRefused as Refusal

log = logging.getLogger("clawhq.egress")

CONNECT_SECONDS = 10.0
HELLO_SECONDS = 10.0
CHUNK = 64 * 1024
ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"


@dataclass(frozen=True)
class EgressAgent:
    """An agent as the proxy sees it: who, under which policy, allowed where."""

    agent_id: str
    policy: str
    patterns: tuple[Pattern, ...]


#: Finds the agent whose current container holds this LLM token (None: no such agent).
Identify = Callable[[str], Awaitable[EgressAgent | None]]
#: Called once per connection attempt: agent id ("" if unknown), destination, verdict.
Record = Callable[[str, str, str], None]
#: Why an address may not be connected to (see :func:`~clawhq.egress.policy.address_problem`).
Check = Callable[..., str | None]


class EgressProxy:
    """The asyncio server; one per ClawHQ process, listening on the egress network's gateway."""

    def __init__(
        self,
        identify: Identify,
        denied: Sequence[IPv4Network],
        *,
        record: Record | None = None,
        idle_seconds: float = 300.0,
        per_agent: int = 64,
        resolve: Callable[[str, int], Awaitable[list[str]]] | None = None,
        check: Check = address_problem,
    ) -> None:
        self._identify = identify
        self._denied = denied
        self._record = record or (lambda agent, dest, verdict: None)
        self._idle = idle_seconds
        self._per_agent = per_agent
        self._resolve = resolve or _resolve
        self._check = check
        self._open: Counter[str] = Counter()
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._serve, host, port, limit=HEAD_LIMIT)
        log.info("egress proxy for agents listens on %s:%d", host, port)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        agent_id, dest, tunnel = "", "-", False
        try:
            head = await read_head(reader)
            host, port = destination(head)
            dest = f"{host}:{port}"
            agent = await self._who(head)
            agent_id = agent.agent_id
            if head.method != "CONNECT":
                check_host(head, host, port)
            addresses = await self._allowed(agent, host, port)
            if self._open[agent_id] >= self._per_agent:
                raise Refusal(429, "too_many", "too many connections through ClawHQ at once")
            self._open[agent_id] += 1
            try:
                first = b""
                if head.method == "CONNECT":
                    tunnel = True  # from here on a refusal closes it: HTTP is over
                    writer.write(ESTABLISHED)
                    await writer.drain()
                    first = await read_hello(reader, host)
                upstream = await self._connect(addresses, port)
                self._record(agent_id, dest, "allowed")
                log.info("egress agent=%s dest=%s allowed", agent_id, dest)
                await self._relay(head, first, reader, writer, *upstream)
            finally:
                self._open[agent_id] -= 1
                if not self._open[agent_id]:
                    del self._open[agent_id]
        except Refusal as refusal:
            self._record(agent_id, dest, refusal.reason)
            log.info(
                "egress agent=%s dest=%s refused (%s): %s",
                agent_id or "-",
                dest,
                refusal.reason,
                refusal.message,
            )
            if not tunnel:
                await answer(writer, refusal)
        except (ConnectionError, OSError, TimeoutError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _who(self, head: Head) -> EgressAgent:
        token = token_of(head)
        try:
            agent = await self._identify(token) if token else None
        except Exception:  # the database is away: nobody can be let out, say so and go on
            log.warning("egress proxy cannot look agents up", exc_info=True)
            raise Refusal(503, "unavailable", "ClawHQ cannot check the agent now") from None
        if agent is None:
            raise Refusal(407, "unauthenticated", "ClawHQ's proxy needs the agent's token")
        if agent.policy != "allowlist":
            raise Refusal(403, f"policy_{agent.policy}", f"egress policy {agent.policy}")
        return agent

    async def _allowed(self, agent: EgressAgent, host: str, port: int) -> list[str]:
        verdict = judge(host, port, agent.patterns)
        if not verdict.allowed:
            raise Refusal(403, "not_allowed", f"{host}:{port} is not on this agent's list")
        literal = literal_address(host)
        addresses = [host] if literal is not None else await self._resolve(host, port)
        if not addresses:
            raise Refusal(502, "unresolved", f"{host} does not resolve")
        for address in addresses:
            parsed = literal_address(address)
            problem = (
                "not an address"
                if parsed is None
                else self._check(parsed, self._denied, named=verdict.by_address)
            )
            if problem:
                raise Refusal(403, "address_denied", problem)
        return addresses

    async def _connect(
        self, addresses: list[str], port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        for address in addresses:
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(CONNECT_SECONDS):
                    return await asyncio.open_connection(address, port, limit=CHUNK)
        raise Refusal(502, "unreachable", "the destination does not answer")

    async def _relay(
        self,
        head: Head,
        first: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> None:
        """Relay both ways; the destination gets ``first`` (a tunnel's ClientHello, already
        read) or the plain request, before anything else."""
        try:
            up_writer.write(first if head.method == "CONNECT" else origin_request(head))
            await up_writer.drain()
            activity = _Activity(asyncio.get_running_loop().time())
            pipes = [
                asyncio.create_task(self._pipe(reader, up_writer, activity)),
                asyncio.create_task(self._pipe(up_reader, writer, activity)),
            ]
            try:
                await asyncio.gather(*pipes)
            finally:
                for pipe in pipes:
                    pipe.cancel()
        finally:
            up_writer.close()

    async def _pipe(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, activity: _Activity
    ) -> None:
        """Copy one direction until it ends, or until neither direction carried anything for
        the idle limit (then both are closed: a silent connection is not kept)."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    async with asyncio.timeout(self._idle):
                        data = await source.read(CHUNK)
                except TimeoutError:
                    if loop.time() - activity.last < self._idle:
                        continue
                    raise
                if not data:
                    break
                activity.last = loop.time()
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError, TimeoutError):
            sink.close()
            return
        with contextlib.suppress(Exception):
            if sink.can_write_eof():
                sink.write_eof()


@dataclass
class _Activity:
    last: float = field(default=0.0)


async def read_hello(reader: asyncio.StreamReader, host: str) -> bytes:
    """The first bytes of a tunnel to ``host``, once they hold a TLS ClientHello whose server
    name (SNI) is ``host``; :class:`Refusal` when they do not, or not within
    :data:`~clawhq.egress.tls.HELLO_LIMIT` bytes and :data:`HELLO_SECONDS`."""
    data = b""
    try:
        async with asyncio.timeout(HELLO_SECONDS):
            while (hello := client_hello(data)) is None:
                chunk = await reader.read(max(1, HELLO_LIMIT - len(data)))
                if not chunk:
                    raise Refusal(400, "no_client_hello", "the tunnel ended before a ClientHello")
                data += chunk
    except TimeoutError:
        raise Refusal(408, "no_client_hello", "no TLS ClientHello in time") from None
    except Malformed as exc:
        raise Refusal(400, "tls_malformed", f"not a TLS ClientHello: {exc}") from None
    if hello.server_name is None:
        raise Refusal(403, "sni_missing", "the TLS ClientHello names no server (SNI)")
    if not names_match(hello.server_name, host):
        named = hello.server_name.lower()
        raise Refusal(403, "sni_mismatch", f"the TLS ClientHello names {named}, not {host}")
    return data


async def _resolve(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return []
    return list(dict.fromkeys(str(info[4][0]) for info in infos))
