"""Request dependencies as ``Annotated`` aliases, so route signatures read like sentences.

Dependencies that do no I/O are ``async``: FastAPI runs a sync dependency on the thread pool,
and each such trip cost more than the whole of an authenticated read (the API benchmark).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import HTTPConnection

from clawhq.api import sessions
from clawhq.api.ratelimit import Limits
from clawhq.api.services import ApiServices, services_of
from clawhq.api.streams import StreamSlots
from clawhq.api.tokencache import TokenCache
from clawhq.clients import client_address
from clawhq.context import AppContext
from clawhq.controller.operations import Operations
from clawhq.db.models import User
from clawhq.egress.service import EgressService
from clawhq.errors import Forbidden, InvalidRequest
from clawhq.llm.gateway import Gateway
from clawhq.proxy.activity import Activity
from clawhq.proxy.http import Clients
from clawhq.proxy.upstreams import Upstreams
from clawhq.services.webhooks import DedupWindow

_bearer = HTTPBearer(
    auto_error=False,
    description="An API token from /api/auth/login. Browsers may use the session cookie of "
    "a login with cookie=true instead (with X-CSRF-Token on requests that change something).",
)


async def get_services(conn: HTTPConnection) -> ApiServices:
    return services_of(conn)


#: Everything the API was wired with (:mod:`clawhq.api.services`); routes take the narrower
#: aliases below.
Services = Annotated[ApiServices, Depends(get_services)]


async def get_context(services: Services) -> AppContext:
    return services.context


#: ClawHQ's core: settings, database, engine, controller (:mod:`clawhq.context`).
Context = Annotated[AppContext, Depends(get_context)]


async def get_tokens(services: Services) -> TokenCache:
    return services.tokens


async def get_limits(services: Services) -> Limits:
    return services.limits


async def get_webhook_events(services: Services) -> DedupWindow:
    return services.webhook_events


async def get_streams(services: Services) -> StreamSlots:
    return services.streams


async def get_proxy_slots(services: Services) -> StreamSlots:
    return services.proxy_slots


async def get_upstreams(services: Services) -> Upstreams:
    return services.upstreams


async def get_activity(services: Services) -> Activity:
    return services.activity


async def get_proxy_clients(services: Services) -> Clients:
    return services.proxy_clients


async def get_llm(services: Services) -> Gateway:
    return services.llm


async def get_egress(services: Services) -> EgressService:
    return services.egress


Tokens = Annotated[TokenCache, Depends(get_tokens)]
RateLimits = Annotated[Limits, Depends(get_limits)]
WebhookEvents = Annotated[DedupWindow, Depends(get_webhook_events)]
#: Server-Sent Event stream slots (``CLAWHQ_STREAMS_*``).
Streams = Annotated[StreamSlots, Depends(get_streams)]
ProxySlots = Annotated[StreamSlots, Depends(get_proxy_slots)]
AgentUpstreams = Annotated[Upstreams, Depends(get_upstreams)]
AgentActivity = Annotated[Activity, Depends(get_activity)]
ProxyClients = Annotated[Clients, Depends(get_proxy_clients)]
LlmGateway = Annotated[Gateway, Depends(get_llm)]


def get_session(context: Context) -> Iterator[Session]:
    with context.sessions() as session:
        yield session


async def get_reads(context: Context) -> sessionmaker[Session]:
    return context.read_sessions


#: A session for requests that write.
DbSession = Annotated[Session, Depends(get_session)]
#: Read-only sessions (on SQLite, reads run in parallel), opened by the endpoint around its
#: reads: ``with reads() as session``. The session then lives within the endpoint's own trip to
#: the thread pool (a session dependency costs two more), and is closed before any engine call.
Reads = Annotated[sessionmaker[Session], Depends(get_reads)]


async def get_operations(context: Context) -> Operations:
    return context.operations


#: What owners and admins ask of agents (deploy, start, stop, delete), through the controller.
Ops = Annotated[Operations, Depends(get_operations)]

BearerToken = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


async def get_current_user(request: Request, credentials: BearerToken) -> User:
    """The caller, from their bearer token or else their session cookie (a cookie request that
    changes something needs its ``X-CSRF-Token``); their budget is charged and their id logged.
    See :func:`clawhq.api.sessions.user_from_request`."""
    return await sessions.authenticate(
        request, credentials.credentials if credentials else None, csrf="header"
    )


CurrentUser = Annotated[User, Depends(get_current_user)]


def client_of(conn: HTTPConnection) -> str:
    """The caller's address: the TCP peer, or the client a trusted proxy names for it
    (``CLAWHQ_TRUSTED_PROXIES``, :mod:`clawhq.clients`); "" if the server gives none."""
    settings = services_of(conn).context.settings
    return client_address(conn.scope, settings.trusted_proxies)


async def limit_auth_attempts(request: Request, limits: RateLimits) -> None:
    """Login and registration budgets per client address (OWASP API4: password guessing)."""
    client = client_of(request) or "unknown"
    limits.auth.check(client, "login or registration attempts")


AuthAttempt = Depends(limit_auth_attempts)


async def limit_registrations(request: Request, limits: RateLimits) -> None:
    """New accounts per client address an hour: free accounts are not a way to take the
    shared port pool (or anything else) by numbers."""
    client = client_of(request) or "unknown"
    limits.register.check(client, "registrations from this address")


Registration = Depends(limit_registrations)


async def get_admin(user: CurrentUser) -> User:
    if not user.is_admin:
        raise Forbidden("this needs an admin account", code="admin_required")
    return user


Admin = Annotated[User, Depends(get_admin)]


_query_names: dict[int, frozenset[str]] = {}


_OPEN = ("/agents/", "/llm/", "/_agent/")


async def reject_unknown_query(request: HTTPConnection) -> None:
    """A query parameter the route does not take is a mistake worth saying (400), not ignoring."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None or not request.query_params or request.url.path.startswith(_OPEN):
        return  # an agent's own pages, and its provider's API, take whatever queries they take
    names = _query_names.get(id(route))
    if names is None:
        names = _query_names[id(route)] = frozenset(_query_aliases(dependant))
    if unknown := sorted(set(request.query_params) - names):
        raise InvalidRequest(
            f"unknown query parameter(s): {', '.join(unknown)}", code="unknown_parameter"
        )


def _query_aliases(dependant: Any) -> set[str]:
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_aliases(sub)
    return names
