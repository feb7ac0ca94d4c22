"""What an owner can see of a running agent: logs, resource use, history, deploy progress."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session, sessionmaker

from clawhq.api.deps import Context, CurrentUser, Reads, Streams
from clawhq.api.problems import problem_responses
from clawhq.api.routes.agents import AgentId, Before
from clawhq.api.schemas import AgentEventList, AgentEventPublic, AgentLogs, AgentStats
from clawhq.api.streams import stream_response
from clawhq.context import AppContext
from clawhq.db.models import Agent, AgentEvent, User
from clawhq.errors import ClawHQError
from clawhq.runtime import LogLine
from clawhq.services import agents
from clawhq.status import AgentStatus

router = APIRouter(
    prefix="/api/agents", tags=["agents"], responses=problem_responses(400, 401, 404, 422, 503)
)

SSE = "text/event-stream"
#: How far a deploy has come, by history entry, for the progress stream.
PROGRESS = {
    "deploying": 10,
    "port_leased": 25,
    "container_created": 50,
    "container_started": 75,
    "started": 100,
    "restarted": 100,
    "failed": 100,
}
SETTLED = frozenset({AgentStatus.RUNNING, AgentStatus.ERROR, AgentStatus.STOPPED})
POLL_SECONDS = 0.5
LOG_POLL_SECONDS = 1.0


def sse(data: object, event: str | None = None) -> str:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, default=str)}\n\n"


@router.get(
    "/{agent_id}/logs",
    response_model=AgentLogs,
    responses={
        200: {"content": {SSE: {}}, "description": "JSON, or SSE with follow=true"},
        **problem_responses(409, 429, 502),
    },
)
async def agent_logs(
    agent_id: AgentId,
    user: CurrentUser,
    reads: Reads,
    context: Context,
    streams: Streams,
    tail: Annotated[int, Query(ge=1, le=10_000)] = 100,
    follow: bool = False,
) -> AgentLogs | StreamingResponse:
    """The container's last ``tail`` log lines; ``follow=true`` streams new lines as SSE
    (one ``data:`` per line) until the container stops, for ``CLAWHQ_STREAM_MAX_SECONDS`` at
    most, and at most ``CLAWHQ_STREAMS_PER_USER`` at once (429 ``too_many_streams``)."""
    agent = await run_in_threadpool(_owned, reads, user, agent_id)
    lines, _ = await run_in_threadpool(context.views.log_lines, agent.id, agent.container_id, tail)
    if not follow:
        return AgentLogs(lines=[line.text for line in lines])
    lifetime = context.settings.stream_max_seconds
    return stream_response(
        streams, lifetime, user.id, lambda end: _follow(context, agent, lines, end)
    )


def _owned(reads: sessionmaker[Session], user: User, agent_id: str) -> Agent:
    with reads() as session:
        return agents.get_owned(session, user, agent_id)


async def _follow(
    context: AppContext, agent: Agent, first: list[LogLine], lifetime: float
) -> AsyncIterator[str]:
    # Polling with `since` rather than holding the engine's follow stream open: a client that
    # goes away ends this generator at its next await, and leaves no thread blocked behind.
    deadline = asyncio.get_running_loop().time() + lifetime
    since = first[-1].time if first else datetime.now(UTC)
    for line in first:
        yield sse(line.text)
    while True:
        await asyncio.sleep(LOG_POLL_SECONDS)
        try:
            lines, running = await run_in_threadpool(
                context.views.log_lines, agent.id, agent.container_id, 0, since
            )
        except ClawHQError as exc:
            yield sse(exc.message, event="end")
            return
        for line in lines:
            since = max(since, line.time)
            yield sse(line.text)
        if not running:
            yield sse("the container stopped", event="end")
            return
        if asyncio.get_running_loop().time() >= deadline:
            yield sse("the stream reached CLAWHQ_STREAM_MAX_SECONDS; open it again", event="end")
            return


@router.get("/{agent_id}/stats", response_model=AgentStats, responses=problem_responses(409, 502))
def agent_stats(agent_id: AgentId, user: CurrentUser, reads: Reads, context: Context) -> AgentStats:
    """CPU, memory, network and pids of the running agent, and its workspace disk's use,
    measured now."""
    with reads() as session:
        agent = agents.get_owned(session, user, agent_id)
    stats = context.views.stats(agent.id, agent.container_id)
    disk = context.views.disk(agent.id)
    limit = stats.memory_limit_bytes
    return AgentStats(
        cpu_percent=stats.cpu_percent,
        memory_bytes=stats.memory_bytes,
        memory_limit_bytes=limit,
        memory_percent=round(stats.memory_bytes / limit * 100, 2) if limit else 0.0,
        pids=stats.pids,
        network_rx_bytes=stats.network_rx_bytes,
        network_tx_bytes=stats.network_tx_bytes,
        disk_used_bytes=disk.used_bytes if disk else None,
        disk_size_bytes=disk.size_bytes if disk else None,
        disk_free_bytes=disk.free_bytes if disk else None,
    )


@router.get("/{agent_id}/events", response_model=AgentEventList)
def agent_events(
    agent_id: AgentId,
    user: CurrentUser,
    reads: Reads,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before: Before = None,
) -> AgentEventList:
    """The agent's lifecycle history, newest first: deployed, started, crashed (and why)…"""
    with reads() as session:
        agent = agents.get_owned(session, user, agent_id)
        rows = agents.history(session, agent, limit, before)
    return AgentEventList(
        events=[AgentEventPublic.model_validate(row) for row in rows],
        next_before=rows[-1].id if len(rows) == limit else None,
    )


@router.get(
    "/{agent_id}/progress",
    response_class=StreamingResponse,
    responses={
        200: {"content": {SSE: {}}, "description": "Server-Sent Events"},
        **problem_responses(429),
    },
)
def agent_progress(
    agent_id: AgentId, user: CurrentUser, reads: Reads, context: Context, streams: Streams
) -> StreamingResponse:
    """The current deploy's progress as Server-Sent Events, ending once the agent settles.

    Each event: ``{"progress": 0-100, "kind", "message", "status", "ready", "failed"}``.
    """
    with reads() as session:
        agent = agents.get_owned(session, user, agent_id)
        after = agents.last_deploy_event_id(session, agent.id)
    lifetime = context.settings.stream_max_seconds
    return stream_response(
        streams, lifetime, user.id, lambda end: _progress(context, agent.id, after, end)
    )


async def _progress(
    context: AppContext, agent_id: str, after: int, lifetime: float
) -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(lifetime, context.settings.start_timeout + 60)
    while loop.time() < deadline:
        events, status = await run_in_threadpool(_poll, context, agent_id, after)
        for event in events:
            after = event.id
            yield sse(
                {
                    "progress": PROGRESS.get(event.kind, 0),
                    "kind": event.kind,
                    "message": event.message,
                    "status": event.status,
                    "ready": event.kind in ("started", "restarted"),
                    "failed": event.kind == "failed",
                },
                event="progress",
            )
        if status is None or status in SETTLED:
            yield sse({"status": status}, event="end")
            return
        await asyncio.sleep(POLL_SECONDS)
    yield sse({"status": "timeout"}, event="end")


def _poll(
    context: AppContext, agent_id: str, after: int
) -> tuple[list[AgentEvent], AgentStatus | None]:
    with context.read_sessions() as session:
        agent = session.get(Agent, agent_id)
        return agents.events_since(session, agent_id, after), agent.status if agent else None
