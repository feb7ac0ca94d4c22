"""HTTP through the proxy: the request goes to the gateway, the answer streams back as it comes.

Nothing is buffered on the way back (Server-Sent Events and large assets pass chunk by chunk);
the request body is read first, up to ``CLAWHQ_PROXY_MAX_MESSAGE``. A client that stops
reading is dropped once a chunk has waited ``CLAWHQ_PROXY_IDLE_SECONDS`` to be taken, and so
is a gateway that goes quiet that long: neither holds a connection slot for ever.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Callable

import httpx
from starlette.requests import ClientDisconnect, HTTPConnection, Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from clawhq.clients import client_address, client_scheme
from clawhq.errors import AgentNotRunning, AgentTimeout, PayloadTooLarge
from clawhq.proxy.headers import (
    Header,
    agent_page_headers,
    downstream_response_headers,
    upstream_request_headers,
)
from clawhq.proxy.upstreams import Upstream
from clawhq.settings import Settings

log = logging.getLogger(__name__)


#: Connection pools the proxy spreads its requests over.
POOLS = 16
#: Which of an upstream's response headers go on, as what.
HeaderFilter = Callable[[list[Header]], list[Header]]


def page_headers(*, clawhq_origin: bool) -> HeaderFilter:
    """The filter for an agent's pages (see :func:`~clawhq.proxy.headers.agent_page_headers`)."""

    def keep(upstream: list[Header]) -> list[Header]:
        return agent_page_headers(upstream, clawhq_origin=clawhq_origin)

    return keep


class Clients:
    """A few pooled clients for every gateway, each request to one of them at random.

    httpcore's pool scans all its connections whenever a request starts or ends, so one pool
    holding hundreds of open streams cost more than relaying them (the proxy benchmark: 75 % of
    the server's time). Spread over ``POOLS`` pools, a scan sees a sixteenth of them. The
    clients share one TLS context (building one costs more than a proxied request).
    """

    def __init__(self, settings: Settings, pools: int = POOLS) -> None:
        timeout = httpx.Timeout(settings.proxy_idle_seconds, connect=5.0)
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=32)
        tls = ssl.create_default_context()
        self._clients = [
            httpx.AsyncClient(
                timeout=timeout,
                limits=limits,
                follow_redirects=False,
                trust_env=False,
                verify=tls,
            )
            for _ in range(pools)
        ]

    def pick(self) -> httpx.AsyncClient:
        return random.choice(self._clients)

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()


async def read_body(request: Request, limit: int) -> bytes:
    """The whole request body, refused with 413 beyond ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"request body over {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        return b""
    return b"".join(chunks)


def target(
    conn: HTTPConnection, upstream: Upstream, path: str, settings: Settings
) -> tuple[str, list[Header]]:
    """The gateway URL for ``path`` (the query kept) and the headers to send it; the client
    forwarded is the one ClawHQ's own limits and audit log see (:mod:`clawhq.clients`)."""
    websocket = conn.scope["type"] == "websocket"
    base = upstream.base_url.replace("http://", "ws://", 1) if websocket else upstream.base_url
    query = conn.url.query
    headers = upstream_request_headers(
        conn.headers.items(),
        identity=upstream.identity,
        client_address=client_address(conn.scope, settings.trusted_proxies),
        proto=client_scheme(conn.scope, settings.trusted_proxies),
        host=conn.headers.get("host", ""),
        websocket=websocket,
        proxy_address=upstream.proxy_address,
    )
    return f"{base}{path}" + (f"?{query}" if query else ""), headers


async def open_upstream(
    clients: Clients,
    request: Request,
    upstream: Upstream,
    path: str,
    body: bytes,
    settings: Settings,
) -> httpx.Response:
    """Send the request to the gateway; its response is open for streaming (close it)."""
    url, headers = target(request, upstream, path, settings)
    client = clients.pick()
    outgoing = client.build_request(request.method, url, headers=headers, content=body)
    try:
        async with asyncio.timeout(settings.proxy_timeout):
            return await client.send(outgoing, stream=True)
    except TimeoutError as exc:
        raise AgentTimeout(
            f"the agent did not start answering within {settings.proxy_timeout:.0f} s "
            "(CLAWHQ_PROXY_TIMEOUT)"
        ) from exc
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError) as exc:
        log.info("agent %s unreachable: %s", upstream.agent_id, type(exc).__name__)
        raise AgentNotRunning(
            "the agent's gateway does not answer yet; try again in a moment",
            agent_status="RUNNING",
            transient=True,
        ) from exc


class StreamedResponse(Response):
    """A response that relays an open upstream response chunk by chunk: the agent proxy's, and
    the core of the LLM gateway's, which overrides :meth:`relay` to meter (clawhq/llm/relay.py).
    ``release`` runs however it ends (done, client gone, timed out, upstream failed)."""

    #: Whether the body is changed on the way (then its length header is dropped).
    rewrites = False

    def __init__(
        self,
        response: httpx.Response,
        idle_seconds: float,
        release: Callable[[], None],
        headers_for: HeaderFilter = downstream_response_headers,
    ) -> None:
        super().__init__(status_code=response.status_code)
        self._response, self._idle, self._release = response, idle_seconds, release
        self._headers_for = headers_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = self._response
        try:
            headers = self._headers_for(response.headers.multi_items())
            if self.rewrites:
                headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
            raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
            start = {"type": "http.response.start", "status": response.status_code, "headers": raw}
            await self.relay(receive, send, start)
        finally:
            await response.aclose()
            self._release()

    async def relay(self, receive: Receive, send: Send, start: Message) -> None:
        """Sends ``start``, then the upstream's chunks as they come; a client that has not taken
        one for the idle time, or has gone, ends the relay (and so does a quiet upstream)."""
        try:
            await send(start)
            loop = asyncio.get_running_loop()
            # One deadline, moved on with every chunk (a task per chunk would cost more than
            # the relay): a client that does not read blocks the send (flow control) past it.
            async with asyncio.timeout(None) as deadline:
                async for chunk in self._response.aiter_raw():
                    deadline.reschedule(loop.time() + self._idle)
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    deadline.reschedule(None)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except (TimeoutError, httpx.ReadTimeout):
            log.info("proxied response dropped after %.0f s without progress", self._idle)
        except (httpx.HTTPError, OSError) as exc:
            log.info("proxied response ended early: %s", type(exc).__name__)
