"""The owner's pages: the agent list, a new agent, one agent, and its lifecycle buttons.

Each handler calls the JSON route's own function (same checks, same audit entries, same
messages), never ClawHQ over HTTP.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from clawhq.api.audit import Audit
from clawhq.api.deps import Context, DbSession, Ops, Reads
from clawhq.api.routes import agents as agent_routes
from clawhq.api.routes import usage as usage_routes
from clawhq.api.routes.agents import AgentId
from clawhq.api.routes.telemetry import agent_events
from clawhq.db.models import User
from clawhq.errors import ClawHQError
from clawhq.web import catalog, charts, render
from clawhq.web.deps import Form, MaybeUser, WebUser, one
from clawhq.web.forms import CHANNEL_FIELDS, CHANNEL_NAMES, CHANNELS, FormError, check_agent
from clawhq.web.render import PageRoute

router = APIRouter(route_class=PageRoute, include_in_schema=False)


def home_page(request: Request, user: User, reads: Reads, context: Context) -> Response:
    listed = agent_routes.list_agents(user, reads, context).agents
    usage = usage_routes.my_usage(user, reads)
    names = {a.id: a.name for a in listed}
    return render.html(
        request,
        "home.html",
        agents=listed,
        usage=usage,
        budget=charts.budget(usage.budget.used, usage.budget.monthly_tokens),
        names=names,
        plan=user.plan,
    )


@router.get("/")
def home(
    request: Request,
    user: MaybeUser,
    reads: Reads,
    context: Context,
    next: Annotated[str | None, Query(max_length=2048)] = None,
) -> Response:
    """Signed in: the caller's agents, live; otherwise the sign-in page."""
    if user is None:
        return render.html(request, "signin.html", next=render.local_path(next, ""), email="")
    if next:
        return render.redirect(render.local_path(next))
    return home_page(request, user, reads, context)


def _form_page(
    request: Request,
    user: User,
    values: dict[str, list[str]] | None = None,
    problem: FormError | None = None,
    error: str | None = None,
    status: int = 200,
) -> Response:
    values = values or {}
    return render.html(
        request,
        "agent_new.html",
        status,
        values={k: v[0] for k, v in values.items() if v},
        ticked=set(values.get("channels", [])),
        field_errors=problem.fields if problem else {},
        error=problem.summary if problem else error,
        providers=catalog.PROVIDER_NAMES,
        models=catalog.MODELS,
        channels=CHANNELS,
        channel_fields=CHANNEL_FIELDS,
        channel_names=CHANNEL_NAMES,
        bundled=user.plan.bundled_keys_allowed,
        plan=user.plan,
    )


@router.get("/ui/agents/new")
def new_agent(request: Request, user: WebUser) -> Response:
    return _form_page(request, user)


@router.post("/ui/agents")
def create_agent(
    request: Request,
    user: WebUser,
    values: Form,
    session: DbSession,
    context: Context,
    audit: Audit,
) -> Response:
    """The form, checked by ``AgentCreate`` (the API's schema), then ``POST /api/agents``."""
    try:
        body = check_agent(values)
    except FormError as problem:
        return _form_page(request, user, values, problem, status=422)
    try:
        agent = agent_routes.create_agent(body, user, session, context, audit)
    except ClawHQError as exc:
        return _form_page(request, user, values, error=exc.message, status=exc.status)
    return render.redirect(f"/ui/agents/{agent.id}")


@router.get("/ui/agents/{agent_id}")
async def agent_page(
    agent_id: AgentId,
    request: Request,
    user: WebUser,
    reads: Reads,
    context: Context,
    watch: Annotated[bool, Query(description="Show the current deploy's progress")] = False,
) -> Response:
    agent = await agent_routes.get_agent(agent_id, user, context)
    history = agent_events(agent_id, user, reads, limit=20)
    return render.html(
        request,
        "agent.html",
        agent=agent,
        history=history,
        watch=watch or agent.status == "DEPLOYING",
        control_ui=f"/agents/{agent.id}/",
    )


@router.post("/ui/agents/{agent_id}/deploy")
def deploy(agent_id: AgentId, user: WebUser, ops: Ops, context: Context, audit: Audit) -> Response:
    agent_routes.deploy_agent(agent_id, user, ops, context, audit)
    return render.redirect(f"/ui/agents/{agent_id}?watch=true")


@router.post("/ui/agents/{agent_id}/start")
def start(agent_id: AgentId, user: WebUser, ops: Ops, context: Context, audit: Audit) -> Response:
    agent_routes.start_agent(agent_id, user, ops, context, audit)
    return render.redirect(f"/ui/agents/{agent_id}?watch=true")


@router.post("/ui/agents/{agent_id}/stop")
def stop(agent_id: AgentId, user: WebUser, ops: Ops, context: Context, audit: Audit) -> Response:
    agent_routes.stop_agent(agent_id, user, ops, context, audit)
    return render.redirect(f"/ui/agents/{agent_id}")


@router.get("/ui/agents/{agent_id}/delete")
async def confirm_delete(
    agent_id: AgentId, request: Request, user: WebUser, context: Context
) -> Response:
    """Deleting is asked twice: this page says what goes and what stays."""
    agent = await agent_routes.get_agent(agent_id, user, context)
    return render.html(request, "agent_delete.html", agent=agent)


@router.post("/ui/agents/{agent_id}/delete")
def delete(agent_id: AgentId, user: WebUser, values: Form, ops: Ops, audit: Audit) -> Response:
    keep = one(values, "workspace", "keep") != "delete"
    agent_routes.delete_agent(agent_id, user, ops, audit, keep_workspace=keep)
    return render.redirect("/")
