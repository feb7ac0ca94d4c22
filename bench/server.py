"""ClawHQ's API for the benchmark: the same app as `clawhq serve`, plus a bare endpoint.

``GET /bench/bare`` (a ``def``, run on the thread pool like FastAPI's hello world) and
``GET /bench/bare-async`` answer from the same process and event loop with no database, auth or
engine work: the ceilings against which the API's own overhead is measured.

With ``BENCH_FAKE_ENGINE=1`` agents run on the in-memory engine, whose containers have loopback
addresses, and ``GET /bench/address/{agent_id}`` says which: the proxy benchmarks put a
stand-in gateway there, so what they measure is the proxy alone.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import uvicorn

from clawhq.api.app import create_app
from clawhq.context import build_context
from clawhq.db import migrate
from clawhq.observability import logs
from clawhq.settings import load_settings


def main() -> None:
    settings = load_settings()
    logs.configure(settings.log_format, logging.INFO)
    fake = os.environ.get("BENCH_FAKE_ENGINE") == "1"
    extra: dict[str, Any] = {}
    if fake:
        from tests.doubles.runtime import FakeRuntime

        extra = {"runtime": FakeRuntime(images={settings.agent_image}), "probe": lambda u: True}
    context = build_context(settings, **extra)
    migrate.upgrade(context.engine)
    app = create_app(lambda: context)

    @app.get("/bench/address/{agent_id}", include_in_schema=False)
    def address(agent_id: str) -> dict[str, str]:
        found = context.deps.observed.containers(agent_id)
        return {"address": next((c.address for c in found if c.address), "")}

    @app.get("/bench/bare", include_in_schema=False)
    def bare() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/bench/bare-async", include_in_schema=False)
    async def bare_async() -> dict[str, bool]:
        return {"ok": True}

    uvicorn.run(app, host="127.0.0.1", port=settings.port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
