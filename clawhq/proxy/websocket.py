"""WebSockets through the proxy: the browser's socket and one to the gateway, relayed frame by
frame in both directions until either side closes.

Limits: a message over ``CLAWHQ_PROXY_MAX_MESSAGE`` closes the pair with 1009 (the server
enforces it on the browser's side, the client library on the gateway's); a browser that stops
reading is dropped once a frame has waited ``CLAWHQ_PROXY_IDLE_SECONDS`` to be taken; a pair
that carries nothing for that long is closed with 1001.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import MutableMapping
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

from clawhq.errors import AgentNotRunning
from clawhq.proxy.http import target
from clawhq.proxy.upstreams import Upstream
from clawhq.settings import Settings

log = logging.getLogger(__name__)

GOING_AWAY = 1001
TOO_BIG = 1009
INTERNAL = 1011
TRY_AGAIN_LATER = 1013


async def open_upstream(
    websocket: WebSocket, upstream: Upstream, path: str, settings: Settings
) -> ClientConnection:
    """The gateway's side of the pair, opened with the browser's subprotocols and Origin."""
    url, headers = target(websocket, upstream, path, settings)
    origin = websocket.headers.get("origin")
    offered = [Subprotocol(p) for p in websocket.scope.get("subprotocols") or ()]
    try:
        return await connect(
            url,
            origin=origin,  # type: ignore[arg-type]  # the gateway checks it against allowedOrigins
            subprotocols=offered or None,
            additional_headers=headers,
            max_size=settings.proxy_max_message,
            open_timeout=10,
            ping_interval=None,  # the browser and the gateway keep their own pings
            compression=None,
            proxy=None,
            user_agent_header=websocket.headers.get("user-agent"),
        )
    except InvalidStatus as exc:
        raise AgentNotRunning(
            f"the agent's gateway refused the connection ({exc.response.status_code})",
            agent_status="RUNNING",
            transient=exc.response.status_code >= 500,
        ) from exc
    except (OSError, TimeoutError, InvalidHandshake) as exc:
        raise AgentNotRunning(
            "the agent's gateway does not answer yet; try again in a moment",
            agent_status="RUNNING",
            transient=True,
        ) from exc


class Relay:
    """Relays one accepted browser socket and its gateway socket until either ends."""

    def __init__(self, browser: WebSocket, gateway: ClientConnection, idle_seconds: float) -> None:
        self.browser = browser
        self.gateway = gateway
        self.idle = idle_seconds
        self.last = time.monotonic()
        self.close_code = 1000
        self.close_reason = ""

    async def run(self) -> None:
        tasks = [
            asyncio.create_task(self._to_gateway()),
            asyncio.create_task(self._to_browser()),
            asyncio.create_task(self._watch_idle()),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self.gateway.close(self.close_code, self.close_reason)
            with contextlib.suppress(Exception):
                await self.browser.close(self.close_code, self.close_reason)

    def _ended(self, code: int, reason: str = "") -> None:
        # 1005/1006 are never sent on the wire; the other side learns of a normal close.
        self.close_code = code if code not in (1005, 1006) and 1000 <= code < 5000 else 1000
        self.close_reason = reason[:120]

    async def _to_gateway(self) -> None:
        while True:
            message: MutableMapping[str, Any] = await self.browser.receive()
            if message["type"] == "websocket.disconnect":
                self._ended(int(message.get("code") or 1000), str(message.get("reason") or ""))
                return
            self.last = time.monotonic()
            data = message.get("text")
            if data is None:
                data = message.get("bytes") or b""
            try:
                await self.gateway.send(data)
            except ConnectionClosed as exc:
                self._from_gateway_close(exc)
                return

    async def _to_browser(self) -> None:
        try:
            await self._relay_to_browser()
        except TimeoutError:
            log.info("browser socket dropped: a frame waited %.0f s to be read", self.idle)
            self._ended(GOING_AWAY, "not reading")

    async def _relay_to_browser(self) -> None:
        loop = asyncio.get_running_loop()
        send = self.browser.send
        async with asyncio.timeout(None) as deadline:  # one deadline, moved per frame
            while True:
                try:
                    data = await self.gateway.recv()
                except ConnectionClosed as exc:
                    self._from_gateway_close(exc)
                    return
                self.last = time.monotonic()
                message = (
                    {"type": "websocket.send", "text": data}
                    if isinstance(data, str)
                    else {"type": "websocket.send", "bytes": data}
                )
                deadline.reschedule(loop.time() + self.idle)
                try:
                    await send(message)
                except (WebSocketDisconnect, RuntimeError, OSError):
                    self._ended(1000)
                    return
                deadline.reschedule(None)

    def _from_gateway_close(self, exc: ConnectionClosed) -> None:
        if exc.rcvd is not None:
            self._ended(exc.rcvd.code, exc.rcvd.reason)
        elif exc.sent is not None and exc.sent.code == TOO_BIG:
            self._ended(TOO_BIG, "message too big")
        else:
            self._ended(INTERNAL, "gateway connection lost")

    async def _watch_idle(self) -> None:
        while True:
            left = self.last + self.idle - time.monotonic()
            if left <= 0:
                self._ended(GOING_AWAY, "idle")
                return
            await asyncio.sleep(left)
