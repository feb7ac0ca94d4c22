"""The FastAPI application: routers, error handlers and the context's lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from clawhq.api import deps, middleware, problems
from clawhq.api.routes import (
    admin,
    agent_access,
    agent_origin,
    agents,
    auth,
    backups,
    health,
    llm,
    login_page,
    metrics,
    plans,
    rollouts,
    telemetry,
    usage,
    webhooks,
)
from clawhq.api.services import build_services
from clawhq.context import AppContext
from clawhq.errors import ClawHQError
from clawhq.web import router as dashboard

log = logging.getLogger(__name__)

#: The largest request body accepted (413 beyond): an agent with every key fits in a few KiB.
MAX_BODY_BYTES = 64 * 1024


def create_app(make_context: Callable[[], AppContext]) -> FastAPI:
    """The API. ``make_context`` runs at start-up, so tests and the CLI wire their own."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = build_services(make_context(), app)
        app.state.services = services
        context = services.context
        try:
            context.networks.prepare()
            log.info("agents post webhooks to %s", context.host.webhook_base_url)
        except ClawHQError as exc:
            log.error("container engine not ready (%s); agent operations will retry", exc)
        await services.start()
        try:
            yield
        finally:
            await services.aclose()

    app = FastAPI(
        title="ClawHQ",
        version="0.1.0",
        summary="OpenClaw agents, one hardened container each.",
        lifespan=lifespan,
        dependencies=[Depends(deps.reject_unknown_query)],
    )
    problems.install(app)
    # Proxied requests (an agent's pages, its chat API), model calls and backup uploads have
    # their own limits.
    app.add_middleware(
        middleware.BodyLimit,
        max_bytes=MAX_BODY_BYTES,
        exempt=lambda path: (
            agent_access.is_proxied(path) or llm.is_llm(path) or backups.is_import(path)
        ),
    )
    app.add_middleware(agent_origin.AgentOriginDispatch)
    app.add_middleware(middleware.RequestObserver)
    modules = (
        auth,
        agents,
        backups,
        telemetry,
        usage,
        plans,
        webhooks,
        admin,
        rollouts,
        health,
        metrics,
    )
    for module in (*modules, health, metrics, agent_origin, agent_access, llm, login_page):
        app.include_router(module.router)
    app.include_router(dashboard)
    return app
