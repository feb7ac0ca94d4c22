"""Per-request plumbing: a request id, latency and error metrics by route, one access log line.

A plain ASGI middleware: Starlette's ``BaseHTTPMiddleware`` adds a task and a stream copy to
every request, which showed up in the API benchmark.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, MutableMapping
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clawhq.api.services import wired
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
        services = wired(scope.get("app"))
        if services is not None and template != "/metrics":
            metrics = services.context.metrics
            metrics.requests.labels(method, template, str(status)).inc()
            metrics.request_seconds.labels(method, template).observe(elapsed)
        state = scope.get("state") or {}
        path_params = scope.get("path_params") or {}
        with logs.bound(user_id=state.get("user_id"), agent_id=path_params.get("agent_id")):
            log.info("%s %s %s %.1fms", method, template, status, elapsed * 1000)


class BodyLimit:
    """Refuses request bodies over ``max_bytes`` with 413 ``payload_too_large`` (problem+json).

    A declared Content-Length over the limit is refused before anything is read; a body that
    turns out longer while being read fails the read with the same error.
    """

    def __init__(
        self, app: ASGIApp, max_bytes: int, exempt: Callable[[str], bool] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.exempt = exempt or (lambda path: False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.exempt(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length", b"")
        if declared.isdigit():
            if int(declared) > self.max_bytes:
                await self._refuse(scope, send)
                return
            await self.app(scope, receive, send)  # the server holds the body to its length
            return
        # No declared length (chunked): read up to the limit first, then replay it.
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message]), send)
                return
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                await self._refuse(scope, send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([body], then=receive), send)

    def _message(self) -> str:
        return f"request body over {self.max_bytes} bytes"

    async def _refuse(self, scope: Scope, send: Send) -> None:
        body = json.dumps(
            {
                "type": "urn:clawhq:error:payload_too_large",
                "title": "Content Too Large",
                "status": 413,
                "detail": self._message(),
                "code": "payload_too_large",
                "instance": scope.get("path", ""),
            }
        ).encode()
        headers = [
            (b"content-type", b"application/problem+json"),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _replay(messages: list[Message], then: Receive | None = None) -> Receive:
    """A ``receive`` that hands out ``messages`` first, then defers to ``then``."""
    pending = list(messages)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        if then is None:
            return {"type": "http.disconnect"}
        return await then()

    return receive
