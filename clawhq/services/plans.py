"""Changes to plans, each in a transaction of its own under the plan's row lock: the only
writes of a plan's columns (tests/unit/test_column_owners.py)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from sqlalchemy.orm import Session

from clawhq.db.models import Plan
from clawhq.errors import NotFound

#: The model budget and limits an admin may set (``PATCH …/llm``).
LLM_TERMS = frozenset(
    {"monthly_token_budget", "budget_own_keys", "llm_requests_per_minute", "llm_tokens_per_minute"}
)


def pin_image(session: Session, name: str, image: str | None) -> Plan:
    def apply(plan: Plan) -> None:
        plan.image = image

    return _change(session, name, apply)


def set_egress(session: Session, name: str, policy: str) -> Plan:
    def apply(plan: Plan) -> None:
        plan.egress_policy = policy

    return _change(session, name, apply)


def set_disk(session: Session, name: str, size: int | None) -> Plan:
    def apply(plan: Plan) -> None:
        plan.agent_disk = size

    return _change(session, name, apply)


def set_backups(session: Session, name: str, schedule: str, keep: int) -> Plan:
    """The plan's backup schedule (``daily`` or ``off``) and how many scheduled backups of
    each agent are kept."""

    def apply(plan: Plan) -> None:
        plan.backup_schedule, plan.backup_keep = schedule, keep

    return _change(session, name, apply)


def set_llm_terms(session: Session, name: str, terms: Mapping[str, object]) -> Plan:
    """Set the given model terms (names from :data:`LLM_TERMS`) of the plan."""
    if unknown := set(terms) - LLM_TERMS:
        raise ValueError(f"not a plan's model term: {', '.join(sorted(unknown))}")

    def apply(plan: Plan) -> None:
        for term, value in terms.items():
            setattr(plan, term, value)

    return _change(session, name, apply)


def _change(session: Session, name: str, apply: Callable[[Plan], None]) -> Plan:
    plan = session.get(Plan, name, with_for_update=True)
    if plan is None:
        raise NotFound(f"plan {name} not found", code="plan_not_found")
    apply(plan)
    session.commit()
    return plan
