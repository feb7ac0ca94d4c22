"""Admin: the plans, and the settings of theirs that shape agents (model budgets and limits,
egress, workspace size, scheduled backups).

A model budget or limit applies from the next model call on. Like an image pin, an egress or
disk change is drift for running agents: they keep their container until a rollout or their
owner's deploy; stopped ones take it on their next start. The forward proxy reads the policy
at every connection, so a tighter policy stops new connections at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Path

from clawhq.api.audit import Audit
from clawhq.api.deps import Admin, DbSession, Reads
from clawhq.api.problems import problem_responses
from clawhq.api.schemas_plans import PlanBackupsChange, PlanDiskChange, PlanEgressChange
from clawhq.api.schemas_rollouts import PlanName
from clawhq.api.schemas_usage import PlanLlm, PlanLlmChange
from clawhq.db.models import Plan
from clawhq.services import plans

router = APIRouter(
    prefix="/api/admin/plans", tags=["admin"], responses=problem_responses(400, 401, 403, 422)
)
PlanPath = Annotated[PlanName, Path()]


def _answer(audit: Audit, action: str, change: Callable[[], Plan]) -> PlanLlm:
    """``change`` one plan (a service call), audited as ``action``; answer the plan as it is."""
    with audit.action(action):
        return PlanLlm.model_validate(change())


@router.get("", response_model=list[PlanLlm], response_model_by_alias=True)
def list_plans(admin: Admin, reads: Reads) -> list[PlanLlm]:
    """The plans with their model budgets and limits, egress policy and workspace size."""
    with reads() as session:
        return [PlanLlm.model_validate(p) for p in session.query(Plan).order_by(Plan.name)]


@router.patch(
    "/{plan_name}/llm",
    response_model=PlanLlm,
    response_model_by_alias=True,
    responses=problem_responses(404),
)
def change_plan_llm(
    plan_name: PlanPath, body: PlanLlmChange, admin: Admin, session: DbSession, audit: Audit
) -> PlanLlm:
    """Set a plan's monthly token budget and per-agent limits: from the next model call on."""

    terms = {name: getattr(body, name) for name in body.model_fields_set}
    return _answer(audit, "admin.plan_llm", lambda: plans.set_llm_terms(session, plan_name, terms))


@router.patch(
    "/{plan_name}/egress",
    response_model=PlanLlm,
    response_model_by_alias=True,
    responses=problem_responses(404),
)
def change_plan_egress(
    plan_name: PlanPath, body: PlanEgressChange, admin: Admin, session: DbSession, audit: Audit
) -> PlanLlm:
    """Set where the plan's agents may connect (docs/egress.md)."""

    return _answer(
        audit, "admin.plan_egress", lambda: plans.set_egress(session, plan_name, body.policy)
    )


@router.patch(
    "/{plan_name}/disk",
    response_model=PlanLlm,
    response_model_by_alias=True,
    responses=problem_responses(404),
)
def change_plan_disk(
    plan_name: PlanPath, body: PlanDiskChange, admin: Admin, session: DbSession, audit: Audit
) -> PlanLlm:
    """Set the size of each workspace of the plan's agents (docs/disks.md)."""

    size: int | None = body.agent_disk  # type: ignore[assignment]  # validated to int
    return _answer(audit, "admin.plan_disk", lambda: plans.set_disk(session, plan_name, size))


@router.patch(
    "/{plan_name}/backups",
    response_model=PlanLlm,
    response_model_by_alias=True,
    responses=problem_responses(404),
)
def change_plan_backups(
    plan_name: PlanPath, body: PlanBackupsChange, admin: Admin, session: DbSession, audit: Audit
) -> PlanLlm:
    """Set the plan's scheduled backups (docs/backups.md)."""

    def change() -> Plan:
        return plans.set_backups(session, plan_name, body.backup_schedule, body.backup_keep)

    return _answer(audit, "admin.plan_backups", change)
