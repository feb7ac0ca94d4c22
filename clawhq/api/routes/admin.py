"""``/api/admin``: operations reserved to admins (others get 403 ``admin_required``)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query

from clawhq.api.audit import Audit
from clawhq.api.deps import Admin, Context, DbSession, Ops, Reads, Tokens
from clawhq.api.problems import problem_responses
from clawhq.api.routes.agents import AgentId, Before, public
from clawhq.api.schemas import (
    AgentList,
    AgentPublic,
    AuditEventList,
    AuditEventPublic,
    PlanChange,
    TokensRevoked,
    UserList,
    UserPublic,
)
from clawhq.api.schemas_rollouts import AgentImage, ImagePin, PlanImage, PlanName
from clawhq.db import audit as audit_log
from clawhq.errors import InvalidRequest
from clawhq.services import agents, plans, users

UserId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
Limit = Annotated[int, Query(ge=1, le=500)]
RFC3339 = re.compile(r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
Offset = Annotated[int, Query(ge=0, le=1_000_000)]
Filter = Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
#: Ids are like path ids: no byte a database cannot store (a NUL answered 500 on PostgreSQL).
ID_PATTERN = r"^[A-Za-z0-9_-]+$"
UserIdFilter = Annotated[str | None, Query(alias="userId", max_length=64, pattern=ID_PATTERN)]
AgentIdFilter = Annotated[str | None, Query(alias="agentId", max_length=64, pattern=ID_PATTERN)]

router = APIRouter(
    prefix="/api/admin", tags=["admin"], responses=problem_responses(400, 401, 403, 422, 503)
)


@router.get("/users", response_model=UserList)
def list_users(admin: Admin, reads: Reads, limit: Limit = 100, offset: Offset = 0) -> UserList:
    """Every user, oldest first, a page at a time."""
    with reads() as session:
        found, total = users.page(session, limit, offset)
        return UserList(users=[UserPublic.model_validate(u) for u in found], total=total)


@router.patch("/users/{user_id}", response_model=UserPublic, responses=problem_responses(404))
def change_plan(
    user_id: UserId, body: PlanChange, admin: Admin, session: DbSession, audit: Audit
) -> UserPublic:
    """Move a user to another plan (``free``, ``pro``, ``team``)."""
    with audit.action("admin.plan_change", target_user_id=user_id):
        return UserPublic.model_validate(users.set_plan(session, user_id, body.plan))


@router.get("/agents", response_model=AgentList)
def list_all_agents(
    admin: Admin,
    reads: Reads,
    context: Context,
    limit: Limit = 100,
    offset: Offset = 0,
    user_id: UserIdFilter = None,
) -> AgentList:
    """Every user's agents (or one user's), oldest first, a page at a time."""
    with reads() as session:
        found = agents.page(session, limit, offset, user_id)
        plans = agents.plans_of(session, (a.user_id for a in found))
    views = context.views
    return AgentList(agents=[public(a, views, plans.get(a.user_id)) for a in found])


@router.post(
    "/agents/{agent_id}/stop", response_model=AgentPublic, responses=problem_responses(404, 409)
)
def stop_any_agent(
    agent_id: AgentId, admin: Admin, ops: Ops, context: Context, audit: Audit
) -> AgentPublic:
    """Stop anyone's agent (the supervisor leaves it stopped, as for its owner's stop)."""
    with audit.action("admin.agent_stop", agent_id=agent_id):
        agent = ops.stop(agent_id)
        with context.read_sessions() as session:
            plan = agents.plans_of(session, [agent.user_id]).get(agent.user_id)
        return public(agent, context.views, plan)


@router.get("/audit", response_model=AuditEventList)
def read_audit(
    admin: Admin,
    reads: Reads,
    limit: Limit = 100,
    before: Before = None,
    action: Filter = None,
    user_id: UserIdFilter = None,
    agent_id: AgentIdFilter = None,
    since: Annotated[
        str | None,
        Query(
            description="RFC 3339 time, e.g. 2026-11-27T08:00:00Z",
            json_schema_extra={"format": "date-time"},
        ),
    ] = None,
) -> AuditEventList:
    """The audit log, newest first: filter by action prefix (``agent.``), user, agent, time."""
    with reads() as session:
        rows = audit_log.search(
            session,
            limit=limit,
            before=before,
            action=action,
            user_id=user_id,
            agent_id=agent_id,
            since=_parse_time(since),
        )
    return AuditEventList(
        events=[AuditEventPublic.model_validate(row) for row in rows],
        next_before=rows[-1].id if len(rows) == limit else None,
    )


def _parse_time(value: str | None) -> datetime | None:
    """An RFC 3339 date-time (any fraction length; Python keeps microseconds)."""
    if value is None:
        return None
    match = RFC3339.match(value)
    try:
        if match is None:
            raise ValueError(value)
        day, clock, fraction, zone = match.groups()
        fraction = (fraction or ".0")[:7]
        zone = "+00:00" if zone in ("Z", "z") else zone
        return datetime.fromisoformat(f"{day}T{clock}{fraction}{zone}").astimezone(UTC)
    except ValueError:
        raise InvalidRequest(f"since: not an RFC 3339 time: {value}", code="invalid_time") from None


# -- image pins (drift only: nothing is recreated; a rollout or the owner's deploy is) ---------


def _check_image(context: Context, image: str | None) -> None:
    if image is not None and not context.runtime.image_exists(image):
        raise InvalidRequest(
            f"image {image} is not on the container engine", code="image_not_found"
        )


@router.patch("/plans/{plan_name}", response_model=PlanImage, responses=problem_responses(404))
def pin_plan_image(
    plan_name: Annotated[PlanName, Path()],
    body: ImagePin,
    admin: Admin,
    session: DbSession,
    context: Context,
    audit: Audit,
) -> PlanImage:
    """Pin the image the plan's agents run (null: CLAWHQ_AGENT_IMAGE). Running agents keep
    their container and show drift until a rollout; stopped ones take it on their next start."""
    with audit.action("admin.plan_image"):
        _check_image(context, body.image)
        plan = plans.pin_image(session, plan_name, body.image)
        return PlanImage(name=plan.name, image=plan.image)


@router.patch("/agents/{agent_id}", response_model=AgentImage, responses=problem_responses(404))
def pin_agent_image(
    agent_id: AgentId,
    body: ImagePin,
    admin: Admin,
    ops: Ops,
    context: Context,
    audit: Audit,
) -> AgentImage:
    """Pin one agent's image (null: its plan's, else CLAWHQ_AGENT_IMAGE); drift only."""
    with audit.action("admin.agent_image", agent_id=agent_id):
        _check_image(context, body.image)
        agent = ops.pin_image(agent_id, body.image)
        return AgentImage(id=agent.id, image=agent.image)


# -- tokens -------------------------------------------------------------------------------------


@router.delete(
    "/users/{user_id}/tokens", response_model=TokensRevoked, responses=problem_responses(404)
)
def revoke_user_tokens(
    user_id: UserId, admin: Admin, session: DbSession, audit: Audit, tokens: Tokens
) -> TokensRevoked:
    """Revoke every API token of a user (they log in again; their agents keep running)."""
    with audit.action("admin.tokens_revoke", target_user_id=user_id):
        digests = users.revoke_all_tokens(session, user_id)
        tokens.evict(digests)
        return TokensRevoked(revoked=len(digests))
