"""The usage ledger: one row per model call, and the totals the API shows from it.

A row says who called which provider and model, how many tokens went in and out, and how it
ended; never the prompt, the answer or a key. An agent's ``totalTokens`` is kept in step with
its rows, and the call's budget reservation is deleted, in the same transaction.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    Select,
    bindparam,
    delete,
    func,
    insert,
    literal_column,
    select,
    update,
)
from sqlalchemy.orm import Session, sessionmaker

from clawhq.db.budgets import LlmMonth, LlmReservation
from clawhq.db.models import Agent, LlmCall

log = logging.getLogger(__name__)

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


def record(
    sessions: sessionmaker[Session], calls: list[CallRecord], settled: Iterable[str] = ()
) -> None:
    """Write calls, add their tokens to their agents' totals (and, by a trigger of the
    database's, to their users' months: :class:`LlmMonth`) and delete the reservations they
    settle, in one transaction (a budget's sum never sees a call both held and spent, or
    neither)."""
    now = datetime.now(UTC)
    per_agent: dict[str, int] = {}
    rows = []
    for call in calls:
        total = call.total_tokens
        per_agent[call.agent_id] = per_agent.get(call.agent_id, 0) + total
        row = {**asdict(call), "at": now, "total_tokens": total}
        row["model"] = call.model[:128] if call.model else None
        rows.append(row)
    reservations = sorted(settled)
    with sessions.begin() as session:
        if rows:
            session.execute(insert(LlmCall), rows)
        for agent_id, total in sorted(per_agent.items()):  # one order: no deadlock between two
            session.execute(
                update(Agent)
                .where(Agent.id == agent_id)
                .values(total_tokens=Agent.total_tokens + total, last_active_at=now)
            )
        for start in range(0, len(reservations), 500):
            chunk = reservations[start : start + 500]
            session.execute(delete(LlmReservation).where(LlmReservation.id.in_(chunk)))


def month_key(at: datetime) -> str:
    """The calendar month (UTC) of ``at``, as :class:`LlmMonth` keys it (and the trigger that
    fills it, from the row's ``at``)."""
    return at.astimezone(UTC).strftime("%Y-%m")


@dataclass(frozen=True)
class _Entry:
    call: CallRecord | None  # None: a reservation released without a call to record
    settles: str | None  # the reservation the call ends


class LedgerWriter:
    """Writes the gateway's calls from one thread, a batch a transaction.

    A row per call written from the event loop's thread pool cost ~4 ms of the server's CPU
    (the thread's hand-offs of the interpreter lock included) and delayed the next call's first
    byte (bench/RESULTS.md); here the loop only queues, and calls that end together share a
    transaction. A batch waits at most ``linger`` seconds. Every ``upkeep_every`` seconds the
    thread also runs ``upkeep`` in a transaction of its own (renewing reservations).
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        linger: float = 0.05,
        *,
        upkeep: Callable[[Session], None] | None = None,
        upkeep_every: float = 60.0,
    ) -> None:
        self._sessions = sessions
        self._linger = linger
        self._upkeep, self._upkeep_every = upkeep, upkeep_every
        self._queue: queue.SimpleQueue[_Entry | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="clawhq-ledger", daemon=True)
        self._thread.start()

    def submit(self, call: CallRecord, settles: str | None = None) -> None:
        """Record a call (and delete the reservation it ``settles``)."""
        self._queue.put(_Entry(call, settles))

    def release(self, reservation: str) -> None:
        """Delete a reservation whose call never reached the provider."""
        self._queue.put(_Entry(None, reservation))

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        stopping = False
        due = time.monotonic() + self._upkeep_every
        while not stopping:
            wait = None if self._upkeep is None else max(due - time.monotonic(), 0.0)
            try:
                first = self._queue.get(timeout=wait)
            except queue.Empty:  # time for the upkeep
                first = _Entry(None, None)
            if first is None:
                return
            batch = [first]
            deadline = time.monotonic() + self._linger
            while len(batch) < 500 and (left := deadline - time.monotonic()) > 0:
                try:
                    more = self._queue.get(timeout=left)
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                batch.append(more)
            self._write(batch)
            if self._upkeep is not None and time.monotonic() >= due:
                self._keep_up()
                due = time.monotonic() + self._upkeep_every

    def _write(self, batch: list[_Entry]) -> None:
        calls = [entry.call for entry in batch if entry.call is not None]
        settled = [entry.settles for entry in batch if entry.settles is not None]
        if not calls and not settled:
            return
        for attempt in range(3):
            try:
                record(self._sessions, calls, settled)
                return
            except Exception:  # the calls are done; losing their rows must not go unnoticed
                if attempt == 2:
                    log.exception("could not write %d model calls to the ledger", len(calls))
                else:
                    time.sleep(0.5 * (attempt + 1))

    def _keep_up(self) -> None:
        assert self._upkeep is not None
        try:
            with self._sessions.begin() as session:
                self._upkeep(session)
        except Exception:  # renewed at the next round; a reservation lasts several
            log.exception("could not renew the LLM budget reservations")


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


_c = LlmCall.__table__.c
# Every value a bound parameter: loop reads hand the compiled SQL to the driver as it is.
_SPENT_ALL = select(
    func.coalesce(func.sum(_c.total_tokens), literal_column("0")).label("spent")
).where(_c.user_id == bindparam("user_id"), _c.at >= bindparam("since"))
_SPENT_BUNDLED = _SPENT_ALL.where(_c.key_source == bindparam("source"))


def spent_query(bundled_only: bool) -> Select[Any]:
    """The sum of tokens that count against a user's budget (bind :func:`spent_params`)."""
    return _SPENT_BUNDLED if bundled_only else _SPENT_ALL


def spent_params(user_id: str, since: datetime, bundled_only: bool) -> dict[str, Any]:
    params: dict[str, Any] = {"user_id": user_id, "since": since}
    return {**params, "source": "bundled"} if bundled_only else params


_m = LlmMonth.__table__.c
_MONTH_ALL = select(func.coalesce(func.sum(_m.tokens), literal_column("0")).label("spent")).where(
    _m.user_id == bindparam("user_id"), _m.month == bindparam("month")
)
#: Bundled keys only -> the tokens that count against a user's budget this month, from
#: :class:`LlmMonth` (bind :func:`month_params`).
MONTH_SPENT = {False: _MONTH_ALL, True: _MONTH_ALL.where(_m.key_source == bindparam("source"))}


def month_params(user_id: str, at: datetime, bundled_only: bool) -> dict[str, Any]:
    params: dict[str, Any] = {"user_id": user_id, "month": month_key(at)}
    return {**params, "source": "bundled"} if bundled_only else params


def budget_spent(session: Session, user_id: str, start: datetime, *, bundled_only: bool) -> int:
    """Tokens that count against the user's budget since ``start``."""
    params = spent_params(user_id, start, bundled_only)
    return int(session.scalar(spent_query(bundled_only), params) or 0)
