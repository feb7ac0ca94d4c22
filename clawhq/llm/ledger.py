"""The usage ledger: one row per model call, and the totals the API shows from it.

A row says who called which provider and model, how many tokens went in and out, and how it
ended; never the prompt, the answer or a key. An agent's ``totalTokens`` is kept in step with
its rows in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from clawhq.db.models import Agent, LlmCall

GroupBy = Literal["day", "model", "agent", "user", "provider"]
AgentGroupBy = Literal["day", "model"]
TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")


@dataclass(frozen=True)
class CallRecord:
    agent_id: str
    user_id: str
    plan: str
    provider: str
    model: str | None
    key_source: str
    streamed: bool
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    status: int
    outcome: str
    latency_ms: int

    @property
    def total_tokens(self) -> int:
        return sum(getattr(self, name) for name in TOKEN_FIELDS)


def record(sessions: sessionmaker[Session], call: CallRecord) -> None:
    """Write one call, and add its tokens to the agent's total, in one transaction."""
    now = datetime.now(UTC)
    total = call.total_tokens
    with sessions.begin() as session:
        session.add(
            LlmCall(
                at=now,
                agent_id=call.agent_id,
                user_id=call.user_id,
                plan=call.plan,
                provider=call.provider,
                model=call.model[:128] if call.model else None,
                key_source=call.key_source,
                streamed=call.streamed,
                input_tokens=call.input_tokens,
                output_tokens=call.output_tokens,
                cache_read_tokens=call.cache_read_tokens,
                cache_write_tokens=call.cache_write_tokens,
                total_tokens=total,
                status=call.status,
                outcome=call.outcome,
                latency_ms=call.latency_ms,
            )
        )
        session.execute(
            update(Agent)
            .where(Agent.id == call.agent_id)
            .values(total_tokens=Agent.total_tokens + total, last_active_at=now)
        )


def _day(session: Session) -> ColumnElement[Any]:
    """The UTC date of a call, as ``YYYY-MM-DD``, on either database."""
    column = LlmCall.__table__.c.at
    if session.get_bind().dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD")
    return func.strftime("%Y-%m-%d", column)


def totals(
    session: Session,
    start: datetime,
    end: datetime,
    *,
    user_id: str | None = None,
    agent_id: str | None = None,
    group_by: GroupBy | None = None,
) -> list[dict[str, Any]]:
    """Calls and tokens in ``[start, end)``, in all or per group (``key``), by key."""
    c = LlmCall.__table__.c
    sums = [func.count().label("requests")] + [
        func.coalesce(func.sum(c[name]), 0).label(name) for name in (*TOKEN_FIELDS, "total_tokens")
    ]
    key: ColumnElement[Any] | None = None
    if group_by == "day":
        key = _day(session)
    elif group_by is not None:
        key = c[{"model": "model", "agent": "agent_id", "user": "user_id"}.get(group_by, group_by)]
    query = select(*([key.label("key")] if key is not None else []), *sums).where(
        c.at >= start, c.at < end
    )
    if user_id is not None:
        query = query.where(c.user_id == user_id)
    if agent_id is not None:
        query = query.where(c.agent_id == agent_id)
    if key is not None:
        query = query.group_by(key).order_by(key)
    return [dict(row._mapping) for row in session.execute(query)]


def budget_spent(session: Session, user_id: str, start: datetime, *, bundled_only: bool) -> int:
    """Tokens that count against the user's budget since ``start``."""
    c = LlmCall.__table__.c
    query = select(func.coalesce(func.sum(c.total_tokens), 0)).where(
        c.user_id == user_id, c.at >= start
    )
    if bundled_only:
        query = query.where(c.key_source == "bundled")
    return int(session.scalar(query) or 0)
