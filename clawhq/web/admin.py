"""Operators' pages: capacity at a glance, users (plan, last activity, start/stop all, tokens),
every agent, the audit log and everyone's model usage. Admins only (403 ``admin_required``).

Starting someone else's agent has no JSON route: it is the same operation the owner's start
runs (``Operations.start``), audited as ``admin.agent_start``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from sqlalchemy import func, select

from clawhq.api.audit import Audit, AuditTrail
from clawhq.api.deps import Context, DbSession, Ops, Reads, Tokens
from clawhq.api.routes import admin as admin_routes
from clawhq.api.routes import usage as usage_routes
from clawhq.api.routes.admin import AgentIdFilter, Filter, Offset, UserId, UserIdFilter
from clawhq.api.routes.agents import AgentId, Before
from clawhq.api.schemas import PlanChange
from clawhq.api.schemas_rollouts import ImagePin
from clawhq.context import AppContext
from clawhq.controller.operations import Operations
from clawhq.controller.rollout_view import newest, summarize
from clawhq.db.models import Agent, ApiToken, Plan, User
from clawhq.errors import ClawHQError
from clawhq.services import agents
from clawhq.status import AgentStatus, DesiredState
from clawhq.web import render
from clawhq.web.deps import Form, WebAdmin, one
from clawhq.web.forms import validate
from clawhq.web.render import PageRoute

router = APIRouter(route_class=PageRoute, include_in_schema=False)
PAGE = 50
Since = Annotated[str | None, Query(max_length=64)]


def _back(request: Request, default: str) -> str:
    """Where a form came from (its page, with its filters), else ``default``."""
    referer = request.headers.get("referer", "")
    page = referer.split(request.url.netloc, 1)[-1] if referer else ""
    return render.local_path(page, default) if page.startswith("/ui/admin") else default


@router.get("/ui/admin")
def overview(request: Request, admin: WebAdmin, reads: Reads, context: Context) -> Response:
    """Capacity at a glance: agents by status, the port pool, users, rollouts under way."""
    settings = context.settings
    with reads() as session:
        by_status = agents.count_by_status(session)
        in_use = context.deps.ports.in_use(session)
        users_total = session.scalar(select(func.count()).select_from(User)) or 0
        running = [summarize(session, r) for r in newest(session, 10)]
    rollouts = [r for r in running if not r.finished]
    ports = {"in_use": in_use, "total": settings.port_count, "free": settings.port_count - in_use}
    return render.html(
        request,
        "admin/overview.html",
        by_status=by_status,
        ports=ports,
        users_total=users_total,
        rollouts=rollouts,
        engine_ok=context.deps.observed.fresh,
        deploys=(by_status.get("DEPLOYING", 0), settings.max_deploys_in_flight),
    )


def _activity(session: Any, user_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Per user: last sign-in (their newest token), last agent activity, agents, running."""
    found: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"signed_in": None, "active": None, "agents": 0, "running": 0}
    )
    tokens = select(ApiToken.user_id, func.max(ApiToken.created_at)).group_by(ApiToken.user_id)
    for user_id, at in session.execute(tokens.where(ApiToken.user_id.in_(user_ids))):
        found[user_id]["signed_in"] = at
    live = select(Agent).where(
        Agent.user_id.in_(user_ids), Agent.desired_state != DesiredState.DELETED
    )
    for agent in session.scalars(live):
        row = found[agent.user_id]
        row["agents"] += 1
        row["running"] += agent.status is AgentStatus.RUNNING
        seen = [t for t in (agent.last_active_at, agent.last_heartbeat) if t is not None]
        if seen and (row["active"] is None or max(seen) > row["active"]):
            row["active"] = max(seen)
    return found


@router.get("/ui/admin/users")
def users_page(request: Request, admin: WebAdmin, reads: Reads, offset: Offset = 0) -> Response:
    listed = admin_routes.list_users(admin, reads, limit=PAGE, offset=offset)
    with reads() as session:
        activity = _activity(session, [u.id for u in listed.users])
        plans = list(session.scalars(select(Plan.name).order_by(Plan.name)))
    return render.html(
        request,
        "admin/users.html",
        listed=listed,
        activity=activity,
        plans=plans,
        offset=offset,
        page=PAGE,
    )


@router.post("/ui/admin/users/{user_id}/plan")
def change_plan(
    user_id: UserId,
    request: Request,
    admin: WebAdmin,
    values: Form,
    session: DbSession,
    audit: Audit,
) -> Response:
    body = validate(PlanChange, {"plan": one(values, "plan")})
    admin_routes.change_plan(user_id, body, admin, session, audit)
    return render.redirect(_back(request, "/ui/admin/users"))


@router.post("/ui/admin/users/{user_id}/tokens/revoke")
def revoke_tokens(
    user_id: UserId,
    request: Request,
    admin: WebAdmin,
    session: DbSession,
    audit: Audit,
    tokens: Tokens,
) -> Response:
    admin_routes.revoke_user_tokens(user_id, admin, session, audit, tokens)
    return render.redirect(_back(request, "/ui/admin/users"))


def _start_any(agent_id: str, ops: Operations, audit: AuditTrail) -> None:
    with audit.action("admin.agent_start", agent_id=agent_id):
        ops.start(agent_id)


def _each(ids: Iterable[str], act: Any) -> list[str]:
    """``act`` on every agent; what failed, with the API's message for each."""
    failed = []
    for agent_id in ids:
        try:
            act(agent_id)
        except ClawHQError as exc:
            failed.append(f"{agent_id}: {exc.message}")
    return failed


def _owned_ids(context: AppContext, user_id: str, statuses: set[AgentStatus]) -> list[str]:
    with context.read_sessions() as session:
        query = select(Agent.id).where(
            Agent.user_id == user_id,
            Agent.desired_state != DesiredState.DELETED,
            Agent.status.in_(statuses),
        )
        return list(session.scalars(query))


@router.post("/ui/admin/users/{user_id}/stop-all")
def stop_all(
    user_id: UserId,
    request: Request,
    admin: WebAdmin,
    ops: Ops,
    context: Context,
    audit: Audit,
) -> Response:
    """Stop every agent of the user that runs or is trying to."""
    wanted = {
        AgentStatus.RUNNING,
        AgentStatus.DEPLOYING,
        AgentStatus.UNHEALTHY,
        AgentStatus.RESTARTING,
        AgentStatus.ERROR,
    }
    ids = _owned_ids(context, user_id, wanted)
    failed = _each(ids, lambda a: admin_routes.stop_any_agent(a, admin, ops, context, audit))
    return _after_all(request, failed)


@router.post("/ui/admin/users/{user_id}/start-all")
def start_all(
    user_id: UserId,
    request: Request,
    admin: WebAdmin,
    ops: Ops,
    context: Context,
    audit: Audit,
) -> Response:
    """Start every stopped or failed agent of the user."""
    ids = _owned_ids(context, user_id, {AgentStatus.STOPPED, AgentStatus.ERROR})
    failed = _each(ids, lambda a: _start_any(a, ops, audit))
    return _after_all(request, failed)


def _after_all(request: Request, failed: list[str]) -> Response:
    if failed:
        return render.error_response(request, 409, "; ".join(failed))
    return render.redirect(_back(request, "/ui/admin/users"))


@router.get("/ui/admin/agents")
def agents_page(
    request: Request,
    admin: WebAdmin,
    reads: Reads,
    context: Context,
    offset: Offset = 0,
    user_id: UserIdFilter = None,
) -> Response:
    listed = admin_routes.list_all_agents(
        admin, reads, context, limit=PAGE, offset=offset, user_id=user_id
    ).agents
    with reads() as session:
        owners = dict(
            session.execute(
                select(User.id, User.email).where(User.id.in_({a.user_id for a in listed}))
            ).all()
        )
    return render.html(
        request,
        "admin/agents.html",
        agents=listed,
        owners=owners,
        offset=offset,
        page=PAGE,
        user_id=user_id,
    )


@router.post("/ui/admin/agents/{agent_id}/stop")
def stop_agent(
    agent_id: AgentId,
    request: Request,
    admin: WebAdmin,
    ops: Ops,
    context: Context,
    audit: Audit,
) -> Response:
    admin_routes.stop_any_agent(agent_id, admin, ops, context, audit)
    return render.redirect(_back(request, "/ui/admin/agents"))


@router.post("/ui/admin/agents/{agent_id}/start")
def start_agent(
    agent_id: AgentId, request: Request, admin: WebAdmin, ops: Ops, audit: Audit
) -> Response:
    _start_any(agent_id, ops, audit)
    return render.redirect(_back(request, "/ui/admin/agents"))


@router.post("/ui/admin/agents/{agent_id}/image")
def pin_agent_image(
    agent_id: AgentId,
    request: Request,
    admin: WebAdmin,
    values: Form,
    ops: Ops,
    context: Context,
    audit: Audit,
) -> Response:
    body = validate(ImagePin, {"image": one(values, "image").strip() or None})
    admin_routes.pin_agent_image(agent_id, body, admin, ops, context, audit)
    return render.redirect(_back(request, "/ui/admin/agents"))


@router.get("/ui/admin/audit")
def audit_page(
    request: Request,
    admin: WebAdmin,
    reads: Reads,
    before: Before = None,
    action: Filter = None,
    user_id: UserIdFilter = None,
    agent_id: AgentIdFilter = None,
    since: Since = None,
) -> Response:
    """The audit log, newest first, filtered as ``GET /api/admin/audit`` filters it."""
    filters = {"action": action, "userId": user_id, "agentId": agent_id, "since": since}
    try:
        found = admin_routes.read_audit(
            admin,
            reads,
            limit=PAGE,
            before=before,
            action=action or None,
            user_id=user_id or None,
            agent_id=agent_id or None,
            since=since or None,
        )
        error, status = None, 200
    except ClawHQError as exc:
        found, error, status = None, exc.message, exc.status
    return render.html(
        request, "admin/audit.html", status, found=found, filters=filters, error=error
    )


def plan_totals(groups: Iterable[Any], plan_of: dict[str, str]) -> list[tuple[str, int, int]]:
    """Per-user usage groups added up per plan: (plan, requests, tokens), biggest first."""
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for group in groups:
        plan = plan_of.get(group.key or "", "(deleted user)")
        totals[plan][0] += group.requests
        totals[plan][1] += group.total_tokens
    return sorted(((p, r, t) for p, (r, t) in totals.items()), key=lambda row: -row[2])


@router.get("/ui/admin/usage")
def usage_page(request: Request, admin: WebAdmin, reads: Reads) -> Response:
    """Model use this month per user and per plan (``GET /api/admin/usage?groupBy=user``)."""
    report = usage_routes.admin_usage(admin, reads, group_by="user")
    with reads() as session:
        ids = [g.key for g in report.groups if g.key]
        rows = session.execute(
            select(User.id, User.email, User.plan_name).where(User.id.in_(ids))
        ).all()
    emails = {r[0]: r[1] for r in rows}
    plan_of = {r[0]: r[2] for r in rows}
    return render.html(
        request,
        "admin/usage.html",
        report=report,
        emails=emails,
        plan_of=plan_of,
        per_plan=plan_totals(report.groups, plan_of),
    )
