"""The agents' own way in to ClawHQ: a listener on the agent network's gateway that serves only
what an agent needs — its webhook and the LLM gateway (the egress proxy has a port of its own).

The user API, the agent proxy, the login page and ``/metrics`` answer on ``CLAWHQ_HOST`` alone
(loopback by default, which no container can reach), never here; the host firewall lets agents
reach this port and the egress proxy's, nothing else of the host (clawhq/network/firewall.py).
So an agent, even one whose plan allows no egress at all, cannot use a user's token to reach
the user API, log in to another account, or talk to another agent through ClawHQ.

It is started with the app and tried again every few seconds while it cannot listen (the
engine was away at start, so the gateway is not known yet; or the port is taken). Its state is
``GET /health``'s ``agentListener``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
from collections.abc import Callable, Iterator

import uvicorn
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from clawhq.api.problems import problem
from clawhq.controller.host import HostState, ProxyState
from clawhq.settings import Settings

log = logging.getLogger("clawhq.agent_listener")

#: What an agent may ask of ClawHQ: its webhook, and its model provider through the gateway.
AGENT_PATHS = re.compile(r"^/(llm/[a-z]+/.*|api/agents/[A-Za-z0-9_-]{1,64}/webhook)$")
RETRY_SECONDS = 5.0


class AgentOnly:
    """The app as agents see it: their paths, and a 404 problem for anything else."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and AGENT_PATHS.match(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] == "http":
            response = problem(
                Request(scope),
                404,
                "not_found",
                "this is ClawHQ's listener for agents: it serves an agent's webhook "
                "(POST /api/agents/{id}/webhook) and the LLM gateway (/llm/…) only",
            )
            await response(scope, receive, send)


class _Server(uvicorn.Server):
    """A uvicorn server inside an event loop that another one already runs: the signals
    stay that one's."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class AgentListener:
    """Serves ``app`` (through :class:`AgentOnly`) on ``gateway():CLAWHQ_AGENT_LISTENER_PORT``."""

    def __init__(
        self,
        settings: Settings,
        app: ASGIApp,
        gateway: Callable[[], str],
        host: HostState,
        retry_seconds: float = RETRY_SECONDS,
    ) -> None:
        self._settings = settings
        self._app = AgentOnly(app)
        self._gateway = gateway
        self._host = host
        self._retry_seconds = retry_seconds
        self._server: _Server | None = None
        self._serving: asyncio.Task[None] | None = None
        self._retrying: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if not self._try():
            self._retrying = asyncio.create_task(self._retry(), name="clawhq-agent-listener")

    async def aclose(self) -> None:
        if self._retrying is not None:
            self._retrying.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retrying
        if self._server is not None and self._serving is not None:
            self._server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await self._serving

    async def _retry(self) -> None:
        while True:
            await asyncio.sleep(self._retry_seconds)
            try:
                if self._try():
                    return
            except Exception:  # keep trying: without it agents reach neither webhook nor model
                log.exception("agent listener: starting it failed")

    def _try(self) -> bool:
        port = self._settings.agent_listener_port
        gateway = self._gateway()
        if not gateway:
            self._report(False, "the agent network's gateway is not known yet (engine)")
            return False
        try:
            sock = _bind(gateway, port)
        except OSError as exc:
            # Not str(exc): it names the gateway's address, and /health is public.
            why = os.strerror(exc.errno) if exc.errno else type(exc).__name__
            self._report(False, f"cannot listen on port {port} of the agent network ({why})")
            return False
        config = uvicorn.Config(
            self._app,
            lifespan="off",  # the app's own lifespan runs once, in the main server
            log_config=None,
            proxy_headers=False,
            limit_concurrency=self._settings.max_connections,
        )
        self._server = _Server(config)
        self._serving = asyncio.create_task(
            self._server.serve(sockets=[sock]), name="clawhq-agent-listener-serve"
        )
        self._report(True, "")
        log.info("agents reach ClawHQ at http://%s:%d (webhooks, LLM gateway)", gateway, port)
        return True

    def _report(self, listening: bool, why: str) -> None:
        state = ProxyState.LISTENING if listening else ProxyState.NOT_LISTENING
        if (state, why) != (self._host.agent_listener, self._host.agent_listener_reason):
            if not listening:
                log.error(
                    "agent listener not listening: %s; agents reach neither their webhook nor "
                    "their model until it does (tried again every %gs)",
                    why,
                    self._retry_seconds,
                )
            self._host.agent_listener, self._host.agent_listener_reason = state, why


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock
