"""The API's composition root: everything a request may use, built once in one place.

:func:`build_services` wires ClawHQ's core (:func:`clawhq.context.build_context`) and the
API's own long-lived parts (limits, caches, stream slots, the agent proxy's clients, the LLM
gateway, the egress proxy) into one typed :class:`ApiServices`. The app's lifespan builds it,
starts it and closes it; routes reach its parts through the ``Annotated`` aliases of
:mod:`clawhq.api.deps`, helpers through :func:`services_of`.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp

from clawhq.api.agent_listener import AgentListener
from clawhq.api.ratelimit import Limits
from clawhq.api.streams import StreamSlots
from clawhq.api.tokencache import TokenCache
from clawhq.context import AppContext
from clawhq.egress.service import EgressService
from clawhq.llm.gateway import Gateway
from clawhq.proxy import http as proxy_http
from clawhq.proxy.activity import Activity
from clawhq.proxy.tickets import Tickets
from clawhq.proxy.upstreams import Upstreams
from clawhq.services.webhooks import DedupWindow


@dataclass(frozen=True)
class ApiServices:
    context: AppContext
    tokens: TokenCache
    limits: Limits
    webhook_events: DedupWindow
    #: Server-Sent Event streams (logs, progress, rollouts).
    streams: StreamSlots
    #: Connections through the agent proxy.
    proxy_slots: StreamSlots
    upstreams: Upstreams
    #: Access cookies of the agents' own origins.
    tickets: Tickets
    activity: Activity
    proxy_clients: proxy_http.Clients
    llm: Gateway
    egress: EgressService
    agent_listener: AgentListener

    async def start(self) -> None:
        await self.egress.start()
        await self.agent_listener.start()
        self.context.start_background()

    async def aclose(self) -> None:
        await self.agent_listener.aclose()
        await self.egress.aclose()
        await self.proxy_clients.aclose()
        await self.llm.aclose()
        await self.context.aclose()


def build_services(context: AppContext, app: ASGIApp) -> ApiServices:
    """Everything ``app`` serves requests with (``app`` is also what the agents' listener
    serves, restricted to their paths)."""
    settings = context.settings
    host = context.host
    return ApiServices(
        context=context,
        tokens=TokenCache(),
        limits=Limits.of(settings),
        webhook_events=DedupWindow(settings.webhook_dedup_hours),
        streams=StreamSlots(settings.streams_per_user, settings.streams_total),
        proxy_slots=StreamSlots(
            settings.proxy_connections_per_user,
            settings.proxy_connections_total,
            noun="connections to agents",
            setting="CLAWHQ_PROXY_CONNECTIONS_PER_USER",
            code="too_many_connections",
        ),
        upstreams=Upstreams(context.gateways, context.keyring, context.loop_reads),
        tickets=Tickets(context.keyring),
        activity=Activity(context.sessions),
        proxy_clients=proxy_http.Clients(settings),
        llm=Gateway(
            settings, context.keyring, context.loop_reads, context.sessions, context.metrics
        ),
        egress=EgressService(
            settings,
            lambda: host.egress_gateway,  # known once the engine answered
            context.loop_reads,
            context.metrics,
            report=host.report_egress_proxy,
        ),
        agent_listener=AgentListener(settings, app, lambda: host.proxy_address, host),
    )


def services_of(conn: HTTPConnection) -> ApiServices:
    """The services of the app serving ``conn`` (set by its lifespan)."""
    services: ApiServices = conn.app.state.services
    return services


def wired(app: object) -> ApiServices | None:
    """The services of ``app`` once its lifespan has built them (``None`` before)."""
    services = getattr(getattr(app, "state", None), "services", None)
    return services if isinstance(services, ApiServices) else None
