"""Admin: the plan settings that shape agents' containers (egress, workspace size).

Like an image pin, a change is drift for running agents: they keep their container until a
rollout or their owner's deploy; stopped ones take it on their next start. The forward proxy
reads the policy at every connection, so a tighter policy stops new connections at once.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from clawhq.api.audit import Audit
from clawhq.api.deps import Admin, DbSession
from clawhq.api.problems import problem_responses
from clawhq.api.schemas_plans import PlanDiskChange, PlanEgressChange
from clawhq.api.schemas_rollouts import PlanName
from clawhq.api.schemas_usage import PlanLlm
from clawhq.db.models import Plan
from clawhq.errors import NotFound

router = APIRouter(
    prefix="/api/admin/plans", tags=["admin"], responses=problem_responses(400, 401, 403, 422)
)


def _plan(session: DbSession, name: str) -> Plan:
    plan = session.get(Plan, name, with_for_update=True)
    if plan is None:
        raise NotFound(f"plan {name} not found", code="plan_not_found")
    return plan


@router.patch(
    "/{plan_name}/egress",
    response_model=PlanLlm,
    response_model_by_alias=True,
    responses=problem_responses(403, 404),
)
def change_plan_egress(
    plan_name: Annotated[PlanName, Path()],
    body: PlanEgressChange,
    admin: Admin,
    session: DbSession,
    audit: Audit,
) -> PlanLlm:
    """Set where the plan's agents may connect (docs/egress.md)."""
    with audit.action("admin.plan_egress"):
        plan = _plan(session, plan_name)
        plan.egress_policy = body.policy
        session.commit()
        return PlanLlm.model_validate(plan)


@router.patch(
    "/{plan_name}/disk",
    response_model=PlanLlm,
    response_model_by_alias=True,
    responses=problem_responses(403, 404),
)
def change_plan_disk(
    plan_name: Annotated[PlanName, Path()],
    body: PlanDiskChange,
    admin: Admin,
    session: DbSession,
    audit: Audit,
) -> PlanLlm:
    """Set the size of each workspace of the plan's agents (docs/disks.md)."""
    with audit.action("admin.plan_disk"):
        plan = _plan(session, plan_name)
        plan.agent_disk = body.agent_disk  # type: ignore[assignment]  # validated to int
        session.commit()
        return PlanLlm.model_validate(plan)
