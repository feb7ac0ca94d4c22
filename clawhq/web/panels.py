"""The agent page's panels, loaded (and reloaded) by htmx: logs, stats, history, usage."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from clawhq.api.deps import Context, Reads, Streams
from clawhq.api.routes import telemetry
from clawhq.api.routes import usage as usage_routes
from clawhq.api.routes.agents import AgentId, Before
from clawhq.api.schemas import AgentLogs
from clawhq.web import charts, render
from clawhq.web.deps import WebUser
from clawhq.web.render import PageRoute

router = APIRouter(route_class=PageRoute, include_in_schema=False)


@router.get("/ui/agents/{agent_id}/logs")
async def logs(
    agent_id: AgentId,
    request: Request,
    user: WebUser,
    reads: Reads,
    context: Context,
    streams: Streams,
    tail: Annotated[int, Query(ge=1, le=10_000)] = 200,
) -> Response:
    """The container's last ``tail`` lines (``GET /api/agents/{id}/logs``)."""
    found = await telemetry.agent_logs(agent_id, user, reads, context, streams, tail=tail)
    assert isinstance(found, AgentLogs)
    return render.html(
        request, "fragments/logs.html", lines=found.lines, agent_id=agent_id, tail=tail
    )


@router.get("/ui/agents/{agent_id}/stats")
def stats(
    agent_id: AgentId, request: Request, user: WebUser, reads: Reads, context: Context
) -> Response:
    """CPU, memory, network, pids and disk, measured now (``GET /api/agents/{id}/stats``)."""
    measured = telemetry.agent_stats(agent_id, user, reads, context)
    return render.html(request, "fragments/stats.html", stats=measured, agent_id=agent_id)


@router.get("/ui/agents/{agent_id}/events")
def events(
    agent_id: AgentId, request: Request, user: WebUser, reads: Reads, before: Before = None
) -> Response:
    """A page of the lifecycle history, newest first (``GET /api/agents/{id}/events``)."""
    page = telemetry.agent_events(agent_id, user, reads, limit=20, before=before)
    return render.html(request, "fragments/events.html", history=page, agent_id=agent_id)


@router.get("/ui/agents/{agent_id}/usage")
def usage(agent_id: AgentId, request: Request, user: WebUser, reads: Reads) -> Response:
    """Tokens per UTC day this month, against the plan's monthly budget."""
    report = usage_routes.agent_usage(agent_id, user, reads, group_by="day")
    mine = usage_routes.my_usage(user, reads)
    return render.html(
        request,
        "fragments/usage.html",
        chart=charts.daily(report.groups, report.from_, report.to),
        report=report,
        budget=charts.budget(mine.budget.used, mine.budget.monthly_tokens),
        usage=mine,
    )
