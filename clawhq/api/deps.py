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
from clawhq.clients import client_address
from clawhq.context import AppContext
from clawhq.controller.operations import Operations
from clawhq.db.models import User
from clawhq.errors import Forbidden, InvalidRequest

_bearer = HTTPBearer(
    auto_error=False,
    description="An API token from /api/auth/login. Browsers may use the session cookie of "
    "a login with cookie=true instead (with X-CSRF-Token on requests that change something).",
)


async def get_context(request: Request) -> AppContext:
    return request.app.state.context  # type: ignore[no-any-return]


Context = Annotated[AppContext, Depends(get_context)]


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
    settings = conn.app.state.context.settings
    return client_address(conn.scope, settings.trusted_proxies)


async def limit_auth_attempts(request: Request) -> None:
    """Login and registration budgets per client address (OWASP API4: password guessing)."""
    client = client_of(request) or "unknown"
    request.app.state.limits.auth.check(client, "login or registration attempts")


AuthAttempt = Depends(limit_auth_attempts)


async def limit_registrations(request: Request) -> None:
    """New accounts per client address an hour: free accounts are not a way to take the
    shared port pool (or anything else) by numbers."""
    client = client_of(request) or "unknown"
    request.app.state.limits.register.check(client, "registrations from this address")


Registration = Depends(limit_registrations)


async def get_admin(user: CurrentUser) -> User:
    if not user.is_admin:
        raise Forbidden("this needs an admin account", code="admin_required")
    return user


Admin = Annotated[User, Depends(get_admin)]


_query_names: dict[int, frozenset[str]] = {}


_OPEN = ("/agents/", "/llm/")


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
