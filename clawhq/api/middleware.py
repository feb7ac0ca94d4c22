"""Per-request plumbing: a request id, latency and error metrics by route, one access log line."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response

from clawhq.observability import logs

log = logging.getLogger("clawhq.access")

REQUEST_ID_HEADER = "X-Request-ID"


def install(app: FastAPI) -> None:
    @app.middleware("http")
    async def observe(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        given = request.headers.get(REQUEST_ID_HEADER, "")
        request_id = given if 0 < len(given) <= 64 and given.isprintable() else uuid.uuid4().hex
        started = time.perf_counter()
        with logs.bound(request_id=request_id):
            response = await call_next(request)
            elapsed = time.perf_counter() - started
            route = request.scope.get("route")
            # The route's template, never the raw path: ids would explode the label set.
            template = getattr(route, "path", "unmatched")
            context = getattr(request.app.state, "context", None)
            if context is not None and template != "/metrics":
                metrics = context.metrics
                metrics.requests.labels(request.method, template, str(response.status_code)).inc()
                metrics.request_seconds.labels(request.method, template).observe(elapsed)
            with logs.bound(
                user_id=getattr(request.state, "user_id", None),
                agent_id=request.path_params.get("agent_id"),
            ):
                log.info(
                    "%s %s %s %.1fms",
                    request.method,
                    template,
                    response.status_code,
                    elapsed * 1000,
                )
        response.headers[REQUEST_ID_HEADER] = request_id
        return response
