"""The owner's way in to their agent: its gateway (Control UI, WebChat, their WebSocket) under
``/agents/{agentId}/``, and its OpenAI-compatible chat API under ``/api/agents/{id}/v1/``.

Browsers come with ClawHQ's session cookie, API clients with a bearer token; either way only
the agent's owner gets through, only to a running agent, and the agent never sees the
credentials (clawhq/proxy/). Every proxied request counts as activity; opening a WebSocket to
an agent is audited.
"""

from __future__ import annotations

import asyncio
import re
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Path, Request, WebSocket
from fastapi.responses import RedirectResponse, Response

from clawhq.api.deps import CurrentUser, Services, client_of
from clawhq.api.problems import problem, problem_responses
from clawhq.api.services import ApiServices
from clawhq.api.sessions import user_from_request, user_from_websocket
from clawhq.controller.spec import access_path
from clawhq.db import audit
from clawhq.errors import ClawHQError, Unauthorized
from clawhq.observability import logs
from clawhq.proxy import http, websocket
from clawhq.proxy.upstreams import Upstream

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


def is_proxied(path: str) -> bool:
    """Whether the path goes to an agent (it has its own limits, not the API's)."""
    return path.startswith("/agents/") or bool(_CHAT.match(path))


async def _upstream(services: ApiServices, user_id: str, agent_id: str) -> Upstream:
    logs.agent_id.set(agent_id)
    return await services.upstreams.resolve(user_id, agent_id)


def _note_activity(services: ApiServices, agent_id: str) -> None:
    activity = services.activity
    if activity.due(agent_id):  # written off the request's path: it never waits on it
        asyncio.get_running_loop().run_in_executor(None, activity.record, agent_id)


async def _forward(
    services: ApiServices, request: Request, user_id: str, agent_id: str, path: str
) -> Response:
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
    return http.StreamedResponse(answer, settings.proxy_idle_seconds, release)


@router.get("/agents/{agent_id}", include_in_schema=False)
async def control_ui_root(agent_id: AgentId) -> Response:
    return RedirectResponse(f"{access_path(agent_id)}/", status_code=307)


@router.api_route("/agents/{agent_id}/{path:path}", methods=ALL_METHODS, include_in_schema=False)
async def control_ui(
    agent_id: AgentId, path: str, request: Request, services: Services
) -> Response:
    """The agent's gateway, for its owner: Control UI pages, assets and HTTP calls."""
    try:
        user = await user_from_request(request, csrf="origin")
    except Unauthorized:
        if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
            target = quote(
                request.url.path + (f"?{request.url.query}" if request.url.query else "")
            )
            return RedirectResponse(f"/login?next={target}", status_code=303)
        raise
    upstream_path = f"{access_path(agent_id)}/{path}"
    return await _forward(services, request, user.id, agent_id, upstream_path)


@router.websocket("/agents/{agent_id}")
async def control_ui_root_socket(websocket_: WebSocket, agent_id: str, services: Services) -> None:
    """The gateway's WebSocket where the Control UI opens it: the base path itself."""
    await _socket(services, websocket_, agent_id, access_path(agent_id))


@router.websocket("/agents/{agent_id}/{path:path}")
async def control_ui_socket(
    websocket_: WebSocket, agent_id: str, path: str, services: Services
) -> None:
    """The gateway's WebSocket (the Control UI's and WebChat's), for the agent's owner."""
    await _socket(services, websocket_, agent_id, f"{access_path(agent_id)}/{path}")


async def _socket(
    services: ApiServices, websocket_: WebSocket, agent_id: str, upstream_path: str
) -> None:
    settings = services.context.settings
    try:
        user = await user_from_websocket(websocket_)
        upstream = await _upstream(services, user.id, agent_id)
        release = services.proxy_slots.acquire(user.id)
    except ClawHQError as exc:
        await _refuse(websocket_, exc)
        return
    try:
        try:
            gateway = await websocket.open_upstream(websocket_, upstream, upstream_path, settings)
        except ClawHQError as exc:
            await _refuse(websocket_, exc)
            return
        try:
            await websocket_.accept(subprotocol=gateway.subprotocol)
        except BaseException:  # the browser left during the handshake
            await gateway.close()
            raise
        _note_activity(services, agent_id)
        _audit_session(services, websocket_, user.id, agent_id)
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
    return await _forward(services, request, user.id, agent_id, "/v1/chat/completions")


@router.get(
    "/api/agents/{agent_id}/v1/models",
    responses=problem_responses(401, 404, 409, 429, 503, 504),
)
async def models(
    agent_id: AgentId, request: Request, user: CurrentUser, services: Services
) -> Response:
    """The models the agent's gateway offers (OpenAI's format)."""
    return await _forward(services, request, user.id, agent_id, "/v1/models")


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


async def _refuse(websocket_: WebSocket, error: ClawHQError) -> None:
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
