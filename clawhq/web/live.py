"""What changes while a page is open, as Server-Sent Events of HTML for htmx's SSE extension:
the caller's agent rows, one agent's status, a deploy's progress and followed logs.

Each stream holds one of the caller's stream slots (``CLAWHQ_STREAMS_PER_USER``) and ends
within ``CLAWHQ_STREAM_MAX_SECONDS`` (the browser's EventSource then opens it again). The
progress bar is fed by the API's own progress stream (``GET /api/agents/{id}/progress``) and
followed logs by the API's own log follower; this module only turns their JSON into HTML.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Hashable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from clawhq.api.deps import Context, Streams
from clawhq.api.routes import agents as agent_routes
from clawhq.api.routes import telemetry
from clawhq.api.routes.agents import AgentId
from clawhq.api.schemas import AgentPublic
from clawhq.api.streams import stream_response
from clawhq.context import AppContext
from clawhq.db.models import User
from clawhq.errors import ClawHQError
from clawhq.services import agents
from clawhq.web import render
from clawhq.web.deps import WebUser
from clawhq.web.render import PageRoute

router = APIRouter(route_class=PageRoute, include_in_schema=False)

#: How often a stream looks at the database for changes (the page itself never polls).
POLL_SECONDS = 1.0
#: A comment this often keeps proxies from closing a quiet stream.
KEEPALIVE_SECONDS = 15.0


def sse(event: str, markup: str) -> str:
    """One event whose data is ``markup`` (each line its own ``data:``, as SSE wants)."""
    lines = markup.splitlines() or [""]
    return f"event: {event}\n" + "".join(f"data: {line}\n" for line in lines) + "\n"


def parse(chunk: str) -> tuple[str, Any]:
    """The event name and JSON data of one event of the API's own streams."""
    event, data = "message", []
    for line in chunk.splitlines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data.append(line[6:])
    return event, json.loads("\n".join(data)) if data else None


def _mine(context: AppContext, user: User) -> list[AgentPublic]:
    with context.read_sessions() as session:
        owned = agents.list_agents(session, user)
    return [agent_routes.public(a, context.views, user.plan) for a in owned]


def _fingerprint(shown: list[AgentPublic]) -> Hashable:
    return tuple(a.model_dump_json(exclude={"updated_at"}) for a in shown)


async def _changes(
    context: AppContext, lifetime: float, read: Any, draw: Any, event: str
) -> AsyncIterator[str]:
    """``draw(read())`` as ``event`` whenever what ``read`` gives changes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + lifetime
    last: Hashable = None
    quiet = 0.0
    while loop.time() < deadline:
        try:
            shown = await run_in_threadpool(read)
        except ClawHQError as exc:
            yield sse("gone", render.fragment("fragments/notice.html", message=exc.message))
            return
        mark = _fingerprint(shown if isinstance(shown, list) else [shown])
        if mark != last:
            last, quiet = mark, 0.0
            yield sse(event, draw(shown))
        elif quiet >= KEEPALIVE_SECONDS:
            quiet = 0.0
            yield ": keepalive\n\n"
        await asyncio.sleep(POLL_SECONDS)
        quiet += POLL_SECONDS


@router.get("/ui/live/agents")
def live_agents(
    request: Request, user: WebUser, context: Context, streams: Streams
) -> StreamingResponse:
    """``event: agents``: the rows of the caller's agent table, whenever one changes."""

    def draw(shown: list[AgentPublic]) -> str:
        return render.fragment("fragments/agent_rows.html", agents=shown)

    return stream_response(
        streams,
        context.settings.stream_max_seconds,
        user.id,
        lambda end: _changes(context, end, lambda: _mine(context, user), draw, "agents"),
    )


@router.get("/ui/live/agents/{agent_id}")
def live_agent(
    agent_id: AgentId, request: Request, user: WebUser, context: Context, streams: Streams
) -> StreamingResponse:
    """``event: status``: one agent's status card, whenever it changes (``gone`` once it is
    deleted)."""

    def read() -> AgentPublic:
        with context.read_sessions() as session:
            agent = agents.get_owned(session, user, agent_id)
        return agent_routes.public(agent, context.views, user.plan)

    read()  # another user's agent is a 404 before any stream opens

    def draw(agent: AgentPublic) -> str:
        return render.fragment("fragments/agent_status.html", agent=agent)

    return stream_response(
        streams,
        context.settings.stream_max_seconds,
        user.id,
        lambda end: _changes(context, end, read, draw, "status"),
    )


async def _progress_html(stream: AsyncIterator[str]) -> AsyncIterator[str]:
    async for chunk in stream:
        event, data = parse(chunk)
        if event == "progress":
            yield sse("progress", render.fragment("fragments/progress.html", step=data))
        elif event == "end":
            yield sse("end", render.fragment("fragments/progress_end.html", end=data))


@router.get("/ui/agents/{agent_id}/progress")
def progress(
    agent_id: AgentId, request: Request, user: WebUser, context: Context, streams: Streams
) -> StreamingResponse:
    """The current deploy's steps as a ``<progress>`` bar, then ``end`` once it settles."""
    with context.read_sessions() as session:
        agent = agents.get_owned(session, user, agent_id)
        after = agents.last_deploy_event_id(session, agent.id)
    return stream_response(
        streams,
        context.settings.stream_max_seconds,
        user.id,
        lambda end: _progress_html(telemetry._progress(context, agent.id, after, end)),
    )


async def _lines_html(stream: AsyncIterator[str], skip: int) -> AsyncIterator[str]:
    async for chunk in stream:
        event, data = parse(chunk)
        if skip and event == "message":
            skip -= 1  # the line the follower starts after: on the page already
        elif event == "end":
            yield sse("end", render.fragment("fragments/log_line.html", line=str(data), end=True))
        else:
            yield sse("line", render.fragment("fragments/log_line.html", line=str(data), end=False))


@router.get("/ui/agents/{agent_id}/logs/follow")
async def follow_logs(
    agent_id: AgentId, request: Request, user: WebUser, context: Context, streams: Streams
) -> StreamingResponse:
    """New log lines as they come (``line``), until the container stops (``end``)."""

    def owned() -> Any:
        with context.read_sessions() as session:
            return agents.get_owned(session, user, agent_id)

    agent = await run_in_threadpool(owned)
    # The follower goes on from the newest line, which the page shows already.
    last, _ = await run_in_threadpool(context.views.log_lines, agent.id, agent.container_id, 1)
    return stream_response(
        streams,
        context.settings.stream_max_seconds,
        user.id,
        lambda end: _lines_html(telemetry._follow(context, agent, last, end), len(last)),
    )
