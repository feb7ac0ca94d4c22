"""The FastAPI application: routers, error handlers and the context's lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import Depends, FastAPI

from clawhq.api import deps, middleware, problems
from clawhq.api.ratelimit import RateLimiter
from clawhq.api.routes import (
    admin,
    agent_access,
    agents,
    auth,
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
from clawhq.api.streams import StreamSlots
from clawhq.api.tokencache import TokenCache
from clawhq.context import AppContext
from clawhq.egress.service import EgressService
from clawhq.errors import ClawHQError
from clawhq.llm.gateway import Gateway
from clawhq.proxy import http as proxy_http
from clawhq.proxy.activity import Activity
from clawhq.proxy.upstreams import Upstreams
from clawhq.services.webhooks import DedupWindow
from clawhq.web import router as dashboard

log = logging.getLogger(__name__)

#: The largest request body accepted (413 beyond): an agent with every key fits in a few KiB.
MAX_BODY_BYTES = 64 * 1024


@dataclass(frozen=True)
class Limits:
    auth: RateLimiter
    user: RateLimiter
    webhook: RateLimiter
    register: RateLimiter
    login_account: RateLimiter


def create_app(make_context: Callable[[], AppContext]) -> FastAPI:
    """The API. ``make_context`` runs at start-up, so tests and the CLI wire their own."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        context = make_context()
        app.state.context = context
        app.state.tokens = TokenCache()
        app.state.limits = Limits(
            auth=RateLimiter(context.settings.rate_limit_auth),
            user=RateLimiter(context.settings.rate_limit_user),
            webhook=RateLimiter(context.settings.rate_limit_webhook),
            register=RateLimiter(context.settings.rate_limit_register, window=3600.0),
            login_account=RateLimiter(context.settings.rate_limit_login_account, window=3600.0),
        )
        app.state.webhook_events = DedupWindow(context.settings.webhook_dedup_hours)
        app.state.streams = StreamSlots(
            context.settings.streams_per_user, context.settings.streams_total
        )
        app.state.proxy_slots = StreamSlots(
            context.settings.proxy_connections_per_user,
            context.settings.proxy_connections_total,
            noun="connections to agents",
            setting="CLAWHQ_PROXY_CONNECTIONS_PER_USER",
            code="too_many_connections",
        )
        app.state.upstreams = Upstreams(context.parts, context.loop_reads)
        app.state.activity = Activity(context.sessions)
        app.state.proxy_clients = proxy_http.Clients(context.settings)
        app.state.llm = Gateway(
            context.settings,
            context.keyring,
            context.loop_reads,
            context.sessions,
            context.metrics,
        )
        try:
            context.controller.prepare()
            log.info("agents post webhooks to %s", context.parts.webhook_base_url)
        except ClawHQError as exc:
            log.error("container engine not ready (%s); agent operations will retry", exc)
        parts = context.parts
        app.state.egress = EgressService(
            context.settings,
            lambda: parts.egress_gateway,  # known once the engine answered (``prepare``)
            context.loop_reads,
            context.metrics,
            report=lambda state: setattr(parts, "egress_proxy", state),
        )
        await app.state.egress.start()
        context.start_background()
        try:
            yield
        finally:
            await app.state.egress.aclose()
            await app.state.proxy_clients.aclose()
            await app.state.llm.aclose()
            await context.aclose()

    app = FastAPI(
        title="ClawHQ",
        version="0.1.0",
        summary="OpenClaw agents, one hardened container each.",
        lifespan=lifespan,
        dependencies=[Depends(deps.reject_unknown_query)],
    )
    problems.install(app)
    # Proxied requests (an agent's pages, its chat API) and model calls have their own limits.
    app.add_middleware(
        middleware.BodyLimit,
        max_bytes=MAX_BODY_BYTES,
        exempt=lambda path: agent_access.is_proxied(path) or llm.is_llm(path),
    )
    app.add_middleware(middleware.RequestObserver)
    modules = (auth, agents, telemetry, usage, plans, webhooks, admin, rollouts, health, metrics)
    for module in (*modules, agent_access, llm, login_page):
        app.include_router(module.router)
    app.include_router(dashboard)
    return app
