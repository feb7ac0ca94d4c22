"""Model usage from the LLM gateway's ledger: per agent, the caller's month against their
budget, and everyone's for admins (the plans' budgets and limits: :mod:`.plans`)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from sqlalchemy.orm import Session

from clawhq.api.deps import Admin, CurrentUser, Reads
from clawhq.api.problems import problem_responses
from clawhq.api.schemas_usage import (
    AgentUsage,
    Budget,
    Limits,
    MyUsage,
    UsageGroup,
    UsageReport,
    UsageTotals,
)
from clawhq.db.models import Plan, User
from clawhq.errors import InvalidRequest
from clawhq.llm import ledger
from clawhq.llm.limits import month_start
from clawhq.services import agents

router = APIRouter(tags=["usage"], responses=problem_responses(400, 401, 422))

AgentId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
UserId = Annotated[str | None, Query(alias="userId", min_length=1, max_length=64)]
_TIME = r"^\d{4}-\d{2}-\d{2}([Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2}))?$"
_WHEN = "a date (YYYY-MM-DD, UTC) or an RFC 3339 time, e.g. 2026-12-01T08:00:00Z"
From = Annotated[str | None, Query(alias="from", pattern=_TIME, description=f"The start: {_WHEN}.")]
To = Annotated[
    str | None, Query(pattern=_TIME, description=f"The end (a date: all of that day): {_WHEN}.")
]
#: The longest span one report covers.
MAX_SPAN = timedelta(days=400)


def _instant(value: str | None, name: str, *, end: bool) -> datetime | None:
    """A date (``YYYY-MM-DD``, UTC; as ``to``, the whole day is in) or an RFC 3339 time."""
    if value is None:
        return None
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return start + timedelta(days=1) if end else start
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(
            f"{name}: not a date (YYYY-MM-DD) or an RFC 3339 time: {value}", code="invalid_time"
        ) from None
    if moment.tzinfo is None:
        raise InvalidRequest(f"{name}: give a time zone (Z or ±hh:mm)", code="invalid_time")
    return moment.astimezone(UTC)


def _span(start: str | None, to: str | None) -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    begin = _instant(start, "from", end=False) or month_start(now)
    end = _instant(to, "to", end=True) or now
    if end <= begin:
        raise InvalidRequest("`to` must be after `from`", code="invalid_time_range")
    if end - begin > MAX_SPAN:
        raise InvalidRequest(
            f"a report covers at most {MAX_SPAN.days} days", code="invalid_time_range"
        )
    return begin, end


def _totals(rows: list[dict[str, Any]]) -> UsageTotals:
    fields = UsageTotals.model_fields
    return UsageTotals(**{name: sum(int(row[name]) for row in rows) for name in fields})


def _report(
    session: Any, begin: datetime, end: datetime, group_by: ledger.GroupBy | None, **whose: Any
) -> UsageReport:
    groups = ledger.totals(session, begin, end, group_by=group_by, **whose)
    return UsageReport.model_validate(
        {
            "from": begin,
            "to": end,
            "group_by": group_by,
            **whose,
            "totals": _totals(groups),
            "groups": [UsageGroup(**g) for g in groups] if group_by else [],
        }
    )


@router.get(
    "/api/agents/{agent_id}/usage",
    response_model=UsageReport,
    response_model_by_alias=True,
    responses=problem_responses(404),
)
def agent_usage(
    agent_id: AgentId,
    user: CurrentUser,
    reads: Reads,
    start: From = None,
    to: To = None,
    group_by: Annotated[ledger.AgentGroupBy, Query(alias="groupBy")] = "day",
) -> UsageReport:
    """The agent's model calls and tokens in ``[from, to)`` (default: this month so far),
    per UTC day or per model, as metered by ClawHQ's LLM gateway."""
    begin, end = _span(start, to)
    with reads() as session:
        agents.get_owned(session, user, agent_id)
        return _report(session, begin, end, group_by, agent_id=agent_id)


def _plan_now(session: Session, user: User) -> Plan:
    """The user's plan as it is now (the caller's cached user may predate a change)."""
    fresh = session.get(User, user.id)
    return fresh.plan if fresh is not None else user.plan


@router.get("/api/usage", response_model=MyUsage, response_model_by_alias=True)
def my_usage(user: CurrentUser, reads: Reads) -> MyUsage:
    """The caller's model use this calendar month (UTC), their budget and what is left."""
    now = datetime.now(UTC)
    begin = month_start(now)
    end = now + timedelta(seconds=1)
    with reads() as session:
        plan = _plan_now(session, user)
        per_agent = ledger.totals(session, begin, end, user_id=user.id, group_by="agent")
        counted = ledger.budget_spent(
            session, user.id, begin, bundled_only=not plan.budget_own_keys
        )
    budget = plan.monthly_token_budget
    return MyUsage.model_validate(
        {
            "plan": plan.name,
            "from": begin,
            "to": now,
            "budget": Budget(
                monthly_tokens=budget,
                applies_to="all" if plan.budget_own_keys else "bundled",
                used=counted,
                remaining=None if budget is None else max(0, budget - counted),
            ),
            "limits": Limits(
                requests_per_minute=plan.llm_requests_per_minute,
                tokens_per_minute=plan.llm_tokens_per_minute,
            ),
            "totals": _totals(per_agent),
            "agents": [
                AgentUsage(
                    agent_id=row["key"],
                    total_tokens=row["total_tokens"],
                    requests=row["requests"],
                )
                for row in per_agent
            ],
        }
    )


@router.get(
    "/api/admin/usage",
    response_model=UsageReport,
    response_model_by_alias=True,
    responses=problem_responses(403),
)
def admin_usage(
    admin: Admin,
    reads: Reads,
    user_id: UserId = None,
    start: From = None,
    to: To = None,
    group_by: Annotated[ledger.GroupBy, Query(alias="groupBy")] = "user",
) -> UsageReport:
    """Everyone's model use (or one user's), per user, agent, model, provider or day."""
    begin, end = _span(start, to)
    with reads() as session:
        return _report(session, begin, end, group_by, user_id=user_id)
