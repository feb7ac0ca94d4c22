"""Operators' plans (model budgets, egress, workspace size, image pin) and rollouts (start,
follow, pause, resume, abort), through the admin API's own route functions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from sqlalchemy import select

from clawhq.api.audit import Audit
from clawhq.api.deps import Context, DbSession, Reads, Streams
from clawhq.api.routes import admin as admin_routes
from clawhq.api.routes import plans as plan_routes
from clawhq.api.routes import rollouts as rollout_routes
from clawhq.api.routes.rollouts import RolloutId
from clawhq.api.schemas_plans import PlanDiskChange, PlanEgressChange
from clawhq.api.schemas_rollouts import ImagePin, PlanName, RolloutCreate
from clawhq.api.schemas_usage import PlanLlmChange
from clawhq.api.streams import stream_response
from clawhq.controller import rollouts as rollout_state
from clawhq.db.models import Plan
from clawhq.errors import ClawHQError, NotFound
from clawhq.web import render
from clawhq.web.deps import Form, WebAdmin, one
from clawhq.web.forms import FormError, validate
from clawhq.web.live import parse, sse
from clawhq.web.render import PageRoute

router = APIRouter(route_class=PageRoute, include_in_schema=False)

# -- plans ----------------------------------------------------------------------------------


def _plans_page(
    request: Request, admin: Any, reads: Reads, error: str | None = None, status: int = 200
) -> Response:
    listed = plan_routes.list_plans(admin, reads)
    with reads() as session:
        extra = {p.name: (p.max_agents, p.image) for p in session.scalars(select(Plan))}
    return render.html(request, "admin/plans.html", status, plans=listed, extra=extra, error=error)


@router.get("/ui/admin/plans")
def plans(request: Request, admin: WebAdmin, reads: Reads) -> Response:
    return _plans_page(request, admin, reads)


def _optional_int(value: str) -> int | str | None:
    """A number field: blank lifts the cap (null), digits are a number, else as typed (the
    schema says what is wrong with it)."""
    value = value.strip().replace("_", "").replace(",", "")
    if not value:
        return None
    return int(value) if value.isdigit() else value


@router.post("/ui/admin/plans/{plan_name}/llm")
def plan_llm(
    plan_name: PlanName,
    request: Request,
    admin: WebAdmin,
    values: Form,
    session: DbSession,
    reads: Reads,
    audit: Audit,
) -> Response:
    """``PATCH /api/admin/plans/{plan}/llm``: the budget and per-agent limits (blank: none)."""
    try:
        body = validate(
            PlanLlmChange,
            {
                "monthlyTokenBudget": _optional_int(one(values, "monthlyTokenBudget")),
                "budgetOwnKeys": one(values, "budgetOwnKeys") == "true",
                "llmRequestsPerMinute": _optional_int(one(values, "llmRequestsPerMinute")),
                "llmTokensPerMinute": _optional_int(one(values, "llmTokensPerMinute")),
            },
        )
    except FormError as problem:
        return _plans_page(request, admin, reads, f"{plan_name}: {problem.summary}", 422)
    plan_routes.change_plan_llm(plan_name, body, admin, session, audit)
    return render.redirect("/ui/admin/plans")


@router.post("/ui/admin/plans/{plan_name}/egress")
def plan_egress(
    plan_name: PlanName,
    request: Request,
    admin: WebAdmin,
    values: Form,
    session: DbSession,
    reads: Reads,
    audit: Audit,
) -> Response:
    try:
        body = validate(PlanEgressChange, {"policy": one(values, "policy")})
    except FormError as problem:
        return _plans_page(request, admin, reads, f"{plan_name}: {problem.summary}", 422)
    plan_routes.change_plan_egress(plan_name, body, admin, session, audit)
    return render.redirect("/ui/admin/plans")


@router.post("/ui/admin/plans/{plan_name}/disk")
def plan_disk(
    plan_name: PlanName,
    request: Request,
    admin: WebAdmin,
    values: Form,
    session: DbSession,
    reads: Reads,
    audit: Audit,
) -> Response:
    """A size such as ``4g`` (blank: ``CLAWHQ_AGENT_DISK``)."""
    try:
        body = validate(PlanDiskChange, {"agentDisk": _optional_int(one(values, "agentDisk"))})
    except FormError as problem:
        return _plans_page(request, admin, reads, f"{plan_name}: {problem.summary}", 422)
    plan_routes.change_plan_disk(plan_name, body, admin, session, audit)
    return render.redirect("/ui/admin/plans")


@router.post("/ui/admin/plans/{plan_name}/image")
def plan_image(
    plan_name: PlanName,
    request: Request,
    admin: WebAdmin,
    values: Form,
    session: DbSession,
    reads: Reads,
    context: Context,
    audit: Audit,
) -> Response:
    """Pin the plan's image (blank: ``CLAWHQ_AGENT_IMAGE``); drift only, nothing restarts."""
    try:
        body = validate(ImagePin, {"image": one(values, "image").strip() or None})
        admin_routes.pin_plan_image(plan_name, body, admin, session, context, audit)
    except FormError as problem:
        return _plans_page(request, admin, reads, f"{plan_name}: {problem.summary}", 422)
    except ClawHQError as exc:
        return _plans_page(request, admin, reads, f"{plan_name}: {exc.message}", exc.status)
    return render.redirect("/ui/admin/plans")


# -- rollouts -------------------------------------------------------------------------------


def _rollouts_page(
    request: Request,
    admin: Any,
    reads: Reads,
    values: dict[str, str] | None = None,
    error: str | None = None,
    status: int = 200,
) -> Response:
    listed = rollout_routes.list_rollouts(admin, reads, limit=20).rollouts
    with reads() as session:
        plan_names = list(session.scalars(select(Plan.name).order_by(Plan.name)))
    return render.html(
        request,
        "admin/rollouts.html",
        status,
        rollouts=listed,
        plans=plan_names,
        values=values or {},
        error=error,
    )


@router.get("/ui/admin/rollouts")
def rollouts(request: Request, admin: WebAdmin, reads: Reads) -> Response:
    return _rollouts_page(request, admin, reads)


def rollout_body(values: dict[str, list[str]]) -> dict[str, Any]:
    """``POST /api/admin/rollouts``'s body from the form: one selector, as chosen."""
    body: dict[str, Any] = {
        "maxUnavailable": _optional_int(one(values, "maxUnavailable")) or 1,
        "maxFailures": _optional_int(one(values, "maxFailures")) or 1,
    }
    if image := one(values, "image").strip():
        body["image"] = image
    chosen = one(values, "selector", "plan")
    if chosen == "all":
        body["all"] = True
    elif chosen == "agents":
        body["agents"] = one(values, "agents").replace(",", " ").split()
    else:
        body["plan"] = one(values, "plan")
    return body


@router.post("/ui/admin/rollouts")
def start_rollout(
    request: Request,
    admin: WebAdmin,
    values: Form,
    session: DbSession,
    reads: Reads,
    context: Context,
    audit: Audit,
) -> Response:
    shown = {k: v[0] for k, v in values.items() if v}
    try:
        body = validate(RolloutCreate, rollout_body(values))
        rollout_routes.start_rollout(body, admin, session, context, audit)
    except FormError as problem:
        return _rollouts_page(request, admin, reads, shown, problem.summary, 422)
    except ClawHQError as exc:
        return _rollouts_page(request, admin, reads, shown, exc.message, exc.status)
    return render.redirect("/ui/admin/rollouts")


@router.post("/ui/admin/rollouts/{rollout_id}/{action}")
def act_on_rollout(
    rollout_id: RolloutId,
    action: str,
    admin: WebAdmin,
    session: DbSession,
    context: Context,
    audit: Audit,
) -> Response:
    """Pause, resume or abort (``POST /api/admin/rollouts/{id}/{action}``)."""
    acts = {
        "pause": rollout_routes.pause_rollout,
        "resume": rollout_routes.resume_rollout,
        "abort": rollout_routes.abort_rollout,
    }
    act = acts.get(action)
    if act is None:
        raise NotFound(f"no such rollout action: {action}", code="not_found")
    act(rollout_id, admin, session, context, audit)
    return render.redirect("/ui/admin/rollouts")


async def _rollout_html(stream: AsyncIterator[str]) -> AsyncIterator[str]:
    async for chunk in stream:
        event, data = parse(chunk)
        if event == "progress":
            yield sse("progress", render.fragment("fragments/rollout.html", rollout=data))
        elif event == "end":
            yield sse("end", "")


@router.get("/ui/admin/rollouts/{rollout_id}/live")
def follow_rollout(
    rollout_id: RolloutId,
    request: Request,
    admin: WebAdmin,
    reads: Reads,
    context: Context,
    streams: Streams,
) -> StreamingResponse:
    """The rollout's summary whenever it changes, until it finishes
    (``GET /api/admin/rollouts/{id}?follow=true``)."""
    with reads() as session:
        rollout_state.get(session, rollout_id)  # 404 before any stream opens
    return stream_response(
        streams,
        context.settings.stream_max_seconds,
        admin.id,
        lambda end: _rollout_html(rollout_routes._follow(context, rollout_id, end)),
    )
