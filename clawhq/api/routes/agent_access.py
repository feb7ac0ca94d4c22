"""The owner's way in to their agent, on ClawHQ's origin: its OpenAI-compatible chat API
under ``/api/agents/{id}/v1/``, and ``/agents/{id}/``, which takes a browser to the agent's own
origin (:mod:`.agent_origin` serves the Control UI there).

Browsers come with ClawHQ's session cookie, API clients with a bearer token; either way only
the agent's owner gets through, only to a running agent, and the agent never sees the
credentials (clawhq/proxy/). Whatever the agent answers under ClawHQ's origin is sandboxed and
loses every header that would act on that origin. Every proxied request counts as activity;
opening a WebSocket to an agent is audited.
"""

from __future__ import annotations

import asyncio
import re
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Path, Request, WebSocket
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session, sessionmaker

from clawhq.api.deps import CurrentUser, Reads, Services, client_of
from clawhq.api.problems import problem, problem_responses
from clawhq.api.services import ApiServices
from clawhq.api.sessions import user_from_request
from clawhq.controller.spec import access_path
from clawhq.db import audit
from clawhq.db.models import User
from clawhq.errors import ClawHQError, InvalidRequest, NotFound, Unauthorized
from clawhq.observability import logs
from clawhq.proxy import http, websocket
from clawhq.proxy.origins import normal_path, within
from clawhq.proxy.upstreams import Upstream
from clawhq.services import access_codes, agents

#: Where an agent's origin trades a one-time code for its access cookie.
OPEN_PATH = "/_clawhq/open"
#: The internal prefix under which requests for an agent's origin are routed (agent_origin).
AGENT_ORIGIN_PREFIX = "/_agent/"

AgentId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
CHAT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"type": "object"}}},
        "description": "An OpenAI Chat Completions request; `user` picks the conversation.",
    }
}

router = APIRouter(tags=["agent access"], responses=problem_responses(400, 422))
_CHAT = re.compile(r"^/api/agents/[^/]+/v1/")


def wants_page(request: Request) -> bool:
    """A browser navigating (it accepts HTML), which is sent to sign in rather than told 401."""
    return request.method in ("GET", "HEAD") and "text/html" in request.headers.get("accept", "")


def is_proxied(path: str) -> bool:
    """Whether the path goes to an agent (it has its own limits, not the API's)."""
    return path.startswith(("/agents/", AGENT_ORIGIN_PREFIX)) or bool(_CHAT.match(path))


async def _upstream(services: ApiServices, user_id: str, agent_id: str) -> Upstream:
    logs.agent_id.set(agent_id)
    return await services.upstreams.resolve(user_id, agent_id)


def _note_activity(services: ApiServices, agent_id: str) -> None:
    activity = services.activity
    if activity.due(agent_id):  # written off the request's path: it never waits on it
        asyncio.get_running_loop().run_in_executor(None, activity.record, agent_id)


async def forward(
    services: ApiServices,
    request: Request,
    user_id: str,
    agent_id: str,
    path: str,
    *,
    clawhq_origin: bool,
) -> Response:
    """The request, to the owner's agent's gateway at ``path``; its answer streams back
    (``clawhq_origin``: served under ClawHQ's origin, so sandboxed)."""
    settings = services.context.settings
    upstream = await _upstream(services, user_id, agent_id)
    release = services.proxy_slots.acquire(user_id)
    try:
        body = await http.read_body(request, settings.proxy_max_message)
        clients = services.proxy_clients
        answer = await http.open_upstream(clients, request, upstream, path, body, settings)
    except BaseException:
        release()
        raise
    _note_activity(services, agent_id)
    headers = http.page_headers(clawhq_origin=clawhq_origin)
    return http.StreamedResponse(answer, settings.proxy_idle_seconds, release, headers)


@router.get("/agents/{agent_id}", include_in_schema=False)
@router.get("/agents/{agent_id}/{path:path}", include_in_schema=False)
async def open_agent(
    agent_id: AgentId, request: Request, reads: Reads, services: Services
) -> Response:
    """The way to the agent's Control UI: a one-time code for its owner, on to the agent's own
    origin, which trades it for an access cookie of that origin alone (sign in first)."""
    try:
        user = await user_from_request(request)
    except Unauthorized:
        if not wants_page(request):
            raise
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(here)}", status_code=303)
    base = access_path(agent_id)
    wanted = normal_path(request.url.path)
    if not within(wanted, base):
        raise InvalidRequest(
            f"the path leaves the agent's {base}/ once decoded", code="path_outside_agent"
        )
    code = await run_in_threadpool(_code_for, reads, services, user, agent_id)
    target = wanted if wanted != base else f"{base}/"
    if request.url.query:
        target += f"?{request.url.query}"
    origin = services.context.settings.agent_origin_of(agent_id)
    query = urlencode({"code": code, "next": target})
    return RedirectResponse(f"{origin}{OPEN_PATH}?{query}", status_code=303)


def _code_for(
    reads: sessionmaker[Session], services: ApiServices, user: User, agent_id: str
) -> str:
    with reads() as session:
        agents.get_owned(session, user, agent_id)  # 404 for anyone else
    with services.context.sessions() as session:
        return access_codes.issue(session, agent_id, user.id)


@router.api_route(
    "/agents/{agent_id}/{path:path}",
    methods=[m for m in ALL_METHODS if m not in ("GET", "HEAD")],
    include_in_schema=False,
)
async def not_on_this_origin(agent_id: AgentId, request: Request, services: Services) -> Response:
    """The gateway is not served on ClawHQ's origin: only the way there is (for callers who
    are signed in: anyone else is told to sign in first, as on every other route)."""
    await user_from_request(request)
    origin = services.context.settings.agent_origin_of(agent_id)
    raise NotFound(
        f"an agent's pages are served on its own origin ({origin}), not ClawHQ's",
        code="agent_on_own_origin",
    )


@router.websocket("/agents/{agent_id}")
@router.websocket("/agents/{agent_id}/{path:path}")
async def no_socket_on_this_origin(websocket_: WebSocket, agent_id: str) -> None:
    await websocket_.close(1008)  # the agent's WebSocket is on its own origin


async def relay_socket(
    services: ApiServices,
    websocket_: WebSocket,
    user_id: str,
    agent_id: str,
    upstream_path: str,
) -> None:
    """The owner's WebSocket to their agent's gateway at ``upstream_path``."""
    settings = services.context.settings
    try:
        upstream = await _upstream(services, user_id, agent_id)
        release = services.proxy_slots.acquire(user_id)
    except ClawHQError as exc:
        await refuse(websocket_, exc)
        return
    try:
        try:
            gateway = await websocket.open_upstream(websocket_, upstream, upstream_path, settings)
        except ClawHQError as exc:
            await refuse(websocket_, exc)
            return
        try:
            await websocket_.accept(subprotocol=gateway.subprotocol)
        except BaseException:  # the browser left during the handshake
            await gateway.close()
            raise
        _note_activity(services, agent_id)
        _audit_session(services, websocket_, user_id, agent_id)
        await websocket.Relay(websocket_, gateway, settings.proxy_idle_seconds).run()
    finally:
        release()


@router.post(
    "/api/agents/{agent_id}/v1/chat/completions",
    responses={
        200: {
            "description": "The gateway's answer, as JSON or (``stream``) Server-Sent Events",
            "content": {"application/json": {}, "text/event-stream": {}},
        },
        **problem_responses(401, 403, 404, 409, 413, 429, 503, 504),
    },
    openapi_extra=CHAT_BODY,
)
async def chat_completions(
    agent_id: AgentId, request: Request, user: CurrentUser, services: Services
) -> Response:
    """A chat turn with the agent (OpenAI's Chat Completions format, ``stream`` or not),
    answered by its gateway; the ``user`` field keeps a conversation going."""
    path = "/v1/chat/completions"
    return await forward(services, request, user.id, agent_id, path, clawhq_origin=True)


@router.get(
    "/api/agents/{agent_id}/v1/models",
    responses=problem_responses(401, 404, 409, 429, 503, 504),
)
async def models(
    agent_id: AgentId, request: Request, user: CurrentUser, services: Services
) -> Response:
    """The models the agent's gateway offers (OpenAI's format)."""
    return await forward(services, request, user.id, agent_id, "/v1/models", clawhq_origin=True)


def _audit_session(
    services: ApiServices, websocket_: WebSocket, user_id: str, agent_id: str
) -> None:
    context = services.context
    client = client_of(websocket_) or None

    def write() -> None:
        audit.append(
            context.sessions,
            actor="user",
            action="agent.session_open",
            result="ok",
            user_id=user_id,
            agent_id=agent_id,
            detail=f"WebSocket {websocket_.url.path}",
            client=client,
            request_id=None,
        )

    asyncio.get_running_loop().run_in_executor(None, write)


async def refuse(websocket_: WebSocket, error: ClawHQError) -> None:
    """A refused upgrade gets its problem document where the server can send one (an HTTP
    answer instead of the handshake), else a close code saying the same."""
    if "websocket.http.response" in (websocket_.scope.get("extensions") or {}):
        headers = {"Retry-After": str(error.retry_after)} if error.retry_after else None
        response = problem(
            websocket_,  # type: ignore[arg-type]  # only its URL is read
            error.status,
            error.code,
            error.message,
            headers,
            **error.details,
        )
        await websocket_.send_denial_response(response)
        return
    await websocket_.close(websocket.TRY_AGAIN_LATER if error.status >= 500 else 1008)
