"""Request dependencies as ``Annotated`` aliases, so route signatures read like sentences."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from clawhq.context import AppContext
from clawhq.credentials import hash_token
from clawhq.db.models import User
from clawhq.errors import Forbidden, InvalidRequest, Unauthorized
from clawhq.observability import logs
from clawhq.orchestrator.lifecycle import AgentOrchestrator
from clawhq.services import users

_bearer = HTTPBearer(auto_error=False, description="An API token from /api/auth/login")


def get_context(request: Request) -> AppContext:
    return request.app.state.context  # type: ignore[no-any-return]


Context = Annotated[AppContext, Depends(get_context)]


def get_session(context: Context) -> Iterator[Session]:
    with context.sessions() as session:
        yield session


def get_read_session(context: Context) -> Iterator[Session]:
    with context.read_sessions() as session:
        yield session


#: A session for requests that write.
DbSession = Annotated[Session, Depends(get_session)]
#: A session for requests that only read (on SQLite, reads then run in parallel).
ReadSession = Annotated[Session, Depends(get_read_session)]


def get_orchestrator(context: Context) -> AgentOrchestrator:
    return context.orchestrator


Orchestrator = Annotated[AgentOrchestrator, Depends(get_orchestrator)]

BearerToken = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def authenticate(request: Request, session: ReadSession, credentials: BearerToken) -> User:
    if credentials is None:
        raise Unauthorized("send an API token as 'Authorization: Bearer <token>'")
    cache = request.app.state.tokens
    digest = hash_token(credentials.credentials)
    user = cache.get(digest)
    if user is not None:
        return user  # type: ignore[no-any-return]
    # A read session: under SQLite's WAL it holds no lock that the orchestrator's own
    # write sessions would wait for.
    row = users.authenticate(session, credentials.credentials)
    cache.put(digest, row.user, row.expires_at)
    return row.user


async def get_current_user(request: Request, user: Annotated[User, Depends(authenticate)]) -> User:
    request.app.state.limits.user.check(user.id, "requests")
    # Async on purpose: it runs in the request's own context, so the ids bound here reach
    # every log line of the endpoint (sync dependencies run in copies of that context).
    logs.user_id.set(user.id)
    agent_id = request.path_params.get("agent_id")
    if agent_id:
        logs.agent_id.set(agent_id)
    request.state.user_id = user.id
    request.state.is_admin = user.is_admin
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


async def limit_auth_attempts(request: Request) -> None:
    """Login and registration budgets per client address (OWASP API4: password guessing)."""
    client = request.client.host if request.client else "unknown"
    request.app.state.limits.auth.check(client, "login or registration attempts")


AuthAttempt = Depends(limit_auth_attempts)


def get_admin(user: CurrentUser) -> User:
    if not user.is_admin:
        raise Forbidden("this needs an admin account", code="admin_required")
    return user


Admin = Annotated[User, Depends(get_admin)]


_query_names: dict[int, frozenset[str]] = {}


async def reject_unknown_query(request: Request) -> None:
    """A query parameter the route does not take is a mistake worth saying (400), not ignoring."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None or not request.query_params:
        return
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
