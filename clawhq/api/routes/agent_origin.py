"""An agent's own origin (``CLAWHQ_AGENT_ORIGIN``): its Control UI, WebChat and their
WebSocket, for its owner, and nothing of ClawHQ's.

Requests whose ``Host`` is an agent's origin never reach ClawHQ's own routes:
:class:`AgentOriginDispatch` hands them to the routes here, under an internal prefix a request
on ClawHQ's origin cannot use. The owner arrives from ``/agents/{id}/`` on ClawHQ's origin
with a one-time code (:mod:`clawhq.services.access_codes`), traded at ``/_clawhq/open`` for a
short-lived access cookie of this origin alone (:mod:`clawhq.proxy.tickets`); API clients may
send their bearer token instead. Paths are read as a server would once decoded: one that
leaves the agent's ``/agents/{id}/`` is a 400, and only the decoded, normal form is forwarded.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, WebSocket
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from clawhq.api.problems import problem
from clawhq.api.routes.agent_access import (
    AGENT_ORIGIN_PREFIX,
    ALL_METHODS,
    OPEN_PATH,
    forward,
    refuse,
    relay_socket,
    wants_page,
)
from clawhq.api.services import ApiServices, services_of, wired
from clawhq.api.sessions import SAFE_METHODS, user_from_bearer
from clawhq.controller.spec import access_path
from clawhq.errors import ClawHQError, Forbidden, InvalidRequest, Unauthorized
from clawhq.proxy.origins import AgentOrigins, forwardable, normal_path, within
from clawhq.proxy.tickets import TICKET_COOKIE
from clawhq.services import access_codes

router = APIRouter(include_in_schema=False)
AgentLabel = Annotated[str, Path(pattern=r"^[a-z0-9]{1,64}$")]
#: The scope key holding the path as the browser sent it (before the internal prefix).
SENT_PATH = "clawhq.sent_path"


class AgentOriginDispatch:
    """Requests for an agent's origin go to the routes of this module, and nowhere else; the
    internal prefix is refused to everyone else."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._origins: AgentOrigins | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        services = wired(scope.get("app"))
        if services is not None and self._origins is None:
            self._origins = AgentOrigins(services.context.settings.agent_origin_template)
        conn = HTTPConnection(scope)
        agent = self._origins.agent_of(conn.headers.get("host")) if self._origins else None
        path: str = scope.get("path", "")
        if agent is None:
            if path.startswith(AGENT_ORIGIN_PREFIX):
                await _not_found(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        raw = scope.get("raw_path") or path.encode()
        inner = f"{AGENT_ORIGIN_PREFIX}{agent}{path}"
        scope = {
            **scope,
            "path": inner,
            "raw_path": inner.encode(),
            SENT_PATH: raw.decode("latin-1"),
        }
        await self.app(scope, receive, send)


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    response = problem(Request(scope), 404, "not_found", "no such page")
    await response(scope, receive, send)


@router.get(AGENT_ORIGIN_PREFIX + "{agent_id}" + OPEN_PATH)
async def open_here(
    agent_id: AgentLabel,
    request: Request,
    code: Annotated[str, Query(max_length=128)] = "",
    next: Annotated[str, Query(max_length=2048)] = "",
) -> Response:
    """Trade the one-time code for this origin's access cookie, and go on to ``next``."""
    services = services_of(request)
    user_id = await run_in_threadpool(_redeem, services, code, agent_id)
    if user_id is None:
        raise Unauthorized(
            "this link to the agent has expired or was used already: open the agent from "
            "ClawHQ again",
            code="access_code_invalid",
        )
    base = access_path(agent_id)
    target = normal_path(next.split("?", 1)[0]) if next.startswith("/") else f"{base}/"
    if not within(target, base):
        target = f"{base}/"
    query = next.split("?", 1)[1] if "?" in next else ""
    response = RedirectResponse(
        forwardable(target) + (f"?{query}" if query else ""), status_code=303
    )
    settings = services.context.settings
    response.set_cookie(
        TICKET_COOKIE,
        services.tickets.issue(agent_id, user_id),
        max_age=services.tickets.seconds,
        httponly=True,
        samesite="lax",
        secure=settings.agent_origin_of(agent_id).startswith("https://"),
        path="/",
    )
    return response


def _redeem(services: ApiServices, code: str, agent_id: str) -> str | None:
    with services.context.sessions() as session:
        return access_codes.redeem(session, code, agent_id)


@router.api_route(AGENT_ORIGIN_PREFIX + "{agent_id}/{rest:path}", methods=ALL_METHODS)
@router.api_route(AGENT_ORIGIN_PREFIX + "{agent_id}", methods=ALL_METHODS)
async def agent_page(agent_id: AgentLabel, request: Request) -> Response:
    """The agent's gateway, for its owner, under its own base path."""
    services = services_of(request)
    origin = services.context.settings.agent_origin_of(agent_id)
    sent = str(request.scope.get(SENT_PATH, "/"))
    base = access_path(agent_id)
    try:
        user_id, by_cookie = await _owner(request, services, agent_id)
    except Unauthorized:
        if wants_page(request):  # through ClawHQ's origin, which signs in
            public = services.context.settings.public_origin
            return RedirectResponse(f"{public}{base}/", status_code=303)
        raise
    sent_origin = (request.headers.get("origin") or "").rstrip("/").lower()
    if by_cookie and request.method not in SAFE_METHODS and sent_origin != origin:
        raise Forbidden(
            f"a request signed in by this origin's cookie that changes something must come "
            f"from {origin}",
            code="csrf_failed",
        )
    path = normal_path(sent)
    if path == "/":
        return RedirectResponse(f"{base}/", status_code=303)
    if not within(path, base):
        raise InvalidRequest(
            f"the path leaves the agent's {base}/ once decoded", code="path_outside_agent"
        )
    return await forward(
        services, request, user_id, agent_id, forwardable(path), clawhq_origin=False
    )


@router.websocket(AGENT_ORIGIN_PREFIX + "{agent_id}/{rest:path}")
@router.websocket(AGENT_ORIGIN_PREFIX + "{agent_id}")
async def agent_socket(websocket_: WebSocket, agent_id: str) -> None:
    """The Control UI's WebSocket (it opens it at the base path itself), for the owner."""
    services = services_of(websocket_)
    origin = services.context.settings.agent_origin_of(agent_id)
    path = normal_path(str(websocket_.scope.get(SENT_PATH, "/")))
    try:
        sent = websocket_.headers.get("origin")
        if sent is not None and sent.rstrip("/").lower() != origin:
            raise Forbidden(
                f"WebSocket connections to the agent are accepted from {origin} only",
                code="origin_not_allowed",
            )
        if not within(path, access_path(agent_id)):
            raise InvalidRequest("the path leaves the agent's base path", code="path_outside_agent")
        user_id, _ = await _owner(websocket_, services, agent_id)
    except ClawHQError as exc:
        await refuse(websocket_, exc)
        return
    await relay_socket(services, websocket_, user_id, agent_id, forwardable(path))


async def _owner(
    conn: Request | WebSocket, services: ApiServices, agent_id: str
) -> tuple[str, bool]:
    """Who is calling, and whether by this origin's access cookie (else a bearer token: API
    clients). The agent's ownership is checked when its gateway is looked up."""
    user_id = services.tickets.user_of(conn.cookies.get(TICKET_COOKIE), agent_id)
    if user_id is not None:
        services.limits.user.check(user_id, "requests")
        return user_id, True
    if conn.headers.get("authorization", "").lower().startswith("bearer "):
        return (await user_from_bearer(conn)).id, False
    raise Unauthorized(
        "open the agent from ClawHQ (its /agents/{id}/ page) to get this origin's access",
        code="unauthorized",
    )
