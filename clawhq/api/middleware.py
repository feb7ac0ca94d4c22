"""Per-request plumbing: a request id, latency and error metrics by route, one access log line.

A plain ASGI middleware: Starlette's ``BaseHTTPMiddleware`` adds a task and a stream copy to
every request, which showed up in the API benchmark.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import MutableMapping
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clawhq.observability import logs

log = logging.getLogger("clawhq.access")

REQUEST_ID_HEADER = "X-Request-ID"
_HEADER = REQUEST_ID_HEADER.lower().encode()


class RequestObserver:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or ()).get(_HEADER, b"").decode("latin-1")
        request_id = given if 0 < len(given) <= 64 and given.isprintable() else uuid.uuid4().hex
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers") or ())
                headers.append((_HEADER, request_id.encode("latin-1")))
                message["headers"] = headers
            await send(message)

        with logs.bound(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                self._record(scope, status, time.perf_counter() - started)

    @staticmethod
    def _record(scope: MutableMapping[str, Any], status: int, elapsed: float) -> None:
        route = scope.get("route")
        # The route's template, never the raw path: ids would explode the label set.
        template = getattr(route, "path", "unmatched")
        method = scope.get("method", "")
        app = scope.get("app")
        context = getattr(getattr(app, "state", None), "context", None)
        if context is not None and template != "/metrics":
            context.metrics.requests.labels(method, template, str(status)).inc()
            context.metrics.request_seconds.labels(method, template).observe(elapsed)
        state = scope.get("state") or {}
        path_params = scope.get("path_params") or {}
        with logs.bound(user_id=state.get("user_id"), agent_id=path_params.get("agent_id")):
            log.info("%s %s %s %.1fms", method, template, status, elapsed * 1000)
