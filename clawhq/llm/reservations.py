"""Budget reservations: before a budgeted call leaves, the most it may cost is held against its
owner's budget, in the database, so that calls in flight together cannot spend past it (from
one ``clawhq serve`` or several).

A call holds its estimated input plus its output cap, the cap lowered to what the budget has
left and written into the body the provider gets (:mod:`clawhq.llm.caps`), so the provider
cannot overshoot it. The hold is atomic per user: on PostgreSQL under a transaction-scoped
advisory lock on the user, on SQLite under the write lock every writing transaction takes
(``BEGIN IMMEDIATE``); inside it, one statement sums the month's ledger and the live
reservations (one snapshot), then the reservation is inserted.

When the call ends, its ledger row and the deletion of its reservation are one transaction of
the ledger writer (:func:`clawhq.llm.ledger.record`): a sum sees the call either held or spent,
never neither. While a call lasts its process renews its reservation every
:data:`RENEW_EVERY` seconds; one not renewed for :data:`TTL` (its process died) counts no more
and is purged.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio.to_thread
from sqlalchemy import Select, bindparam, delete, func, insert, literal_column, select, text, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from clawhq.db.models import LlmReservation, new_id
from clawhq.errors import LlmRefused
from clawhq.llm import caps, limits
from clawhq.llm.callers import Caller
from clawhq.llm.ledger import spent_params, spent_query
from clawhq.llm.wires import Usage, Wire

log = logging.getLogger(__name__)

#: How long a reservation counts without being renewed.
TTL = timedelta(minutes=5)
#: How often a process renews the reservations of its calls in flight (and purges expired ones).
RENEW_EVERY = 60.0
#: The first key of the per-user advisory locks (PostgreSQL), apart from ClawHQ's other locks.
LOCK_SPACE = 0x4C4C4D52  # "LLMR"

_r = LlmReservation.__table__.c
_HELD = (
    select(func.coalesce(func.sum(_r.tokens), literal_column("0")))
    .where(_r.user_id == bindparam("user_id"), _r.expires_at > bindparam("now"))
    .scalar_subquery()
)
_HELD_BUNDLED = (
    select(func.coalesce(func.sum(_r.tokens), literal_column("0")))
    .where(
        _r.user_id == bindparam("user_id"),
        _r.expires_at > bindparam("now"),
        _r.key_source == bindparam("source"),
    )
    .scalar_subquery()
)


def _sums(bundled_only: bool) -> Select[Any]:
    """The month's spent tokens and the live reservations, in one statement (one snapshot)."""
    spent = spent_query(bundled_only).scalar_subquery()
    return select(spent.label("spent"), (_HELD_BUNDLED if bundled_only else _HELD).label("held"))


@dataclass(frozen=True)
class Held:
    """A call's reservation, and its body as the provider gets it (the cap lowered)."""

    id: str
    input_tokens: int
    output_tokens: int  # the output cap times the answers asked for
    body: bytes

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


def take(
    session: Session,
    caller: Caller,
    ask: caps.Ask,
    *,
    now: datetime,
    ttl: timedelta = TTL,
) -> tuple[str, int]:
    """Reserve a call in ``session``'s transaction: ``(id, output cap)``; a 429 when the
    budget cannot take it. The caller commits."""
    budget = caller.monthly_token_budget
    assert budget is not None, "only budgeted calls are reserved"
    bundled_only = not caller.budget_own_keys
    if session.get_bind().dialect.name == "postgresql":
        lock = text("SELECT pg_advisory_xact_lock(:space, hashtext(:user_id))")
        session.execute(lock, {"space": LOCK_SPACE, "user_id": caller.user_id})
    params = {**spent_params(caller.user_id, limits.month_start(now), bundled_only), "now": now}
    spent, held = session.execute(_sums(bundled_only), params).one()
    left = budget - int(spent) - int(held)
    cap = limits.output_cap(ask, left, caller.tokens_per_minute)
    if cap is None:
        raise limits.budget_refusal(
            caller,
            f"has {max(left, 0)} tokens left ({int(spent)} used, {int(held)} held by calls in "
            f"flight): too few for this call's ~{ask.input_tokens} tokens of input and "
            f"{ask.minimum} of output",
        )
    reservation = new_id()
    session.execute(
        insert(LlmReservation).values(
            id=reservation,
            user_id=caller.user_id,
            agent_id=caller.agent_id,
            key_source=caller.key_source,
            tokens=ask.input_tokens + cap * ask.choices,
            created_at=now,
            expires_at=now + ttl,
        )
    )
    return reservation, cap


class Reservations:
    """This process's reservations: taken on a worker thread, renewed while their calls last."""

    def __init__(self, sessions: sessionmaker[Session], ttl: timedelta = TTL) -> None:
        self._sessions, self._ttl = sessions, ttl
        self._lock = threading.Lock()
        self._live: set[str] = set()

    async def hold(self, caller: Caller, provider: str, wire: Wire, path: str, body: bytes) -> Held:
        """Reserve the call and cap its body, or refuse it (429 with the budget's code)."""
        held = await anyio.to_thread.run_sync(self._hold, caller, provider, wire, path, body)
        with self._lock:  # on the loop: a hold whose caller was cancelled is never renewed
            self._live.add(held.id)
        return held

    def _hold(self, caller: Caller, provider: str, wire: Wire, path: str, body: bytes) -> Held:
        ask = caps.read_ask(wire, provider, path, body)
        try:
            with self._sessions.begin() as session:
                found, cap = take(session, caller, ask, now=datetime.now(UTC), ttl=self._ttl)
        except SQLAlchemyError:
            log.warning("could not reserve a model call's budget", exc_info=True)
            raise LlmRefused(
                503,
                "unavailable",
                "llm_budget_unavailable",
                "the budget cannot be checked right now; try again shortly",
            ) from None
        capped = caps.with_cap(ask, cap, body, add=cap < caps.UNCAPPED_OUTPUT)
        if capped is None:  # parsed but not written back: never sent uncapped
            with self._sessions.begin() as session:
                session.execute(delete(LlmReservation).where(LlmReservation.id == found))
            raise LlmRefused(
                413, "too_large", "llm_request_unreadable", "the request body nests too deeply"
            )
        return Held(found, ask.input_tokens, cap * ask.choices, capped)

    def forget(self, reservation: str) -> str:
        """Stop renewing a reservation (its call ended): its id, for the ledger to delete."""
        with self._lock:
            self._live.discard(reservation)
        return reservation

    def upkeep(self, session: Session) -> None:
        """Renew the reservations of the calls in flight; purge the expired ones."""
        now = datetime.now(UTC)
        with self._lock:
            live = sorted(self._live)
        for start in range(0, len(live), 500):
            session.execute(
                update(LlmReservation)
                .where(LlmReservation.id.in_(live[start : start + 500]))
                .values(expires_at=now + self._ttl)
            )
        session.execute(delete(LlmReservation).where(LlmReservation.expires_at <= now))


def charged(held: Held | None, usage: Usage, status: int) -> Usage:
    """What a call is charged: the usage its answer reported; an answer that reported none
    (cut short, or a provider that sends none) costs its reservation, unless the provider said
    no (a status of 400 or more bills nothing)."""
    if held is None or usage.seen or status >= 400:
        return usage
    return Usage(
        input_tokens=held.input_tokens, output_tokens=held.output_tokens, model=usage.model
    )
