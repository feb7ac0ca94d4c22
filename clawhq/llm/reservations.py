"""Budget reservations: before a budgeted call leaves, the most it may cost is held against its
owner's budget, in the database, so that calls in flight together cannot spend past it (from
one ``clawhq serve`` or several).

A call holds its estimated input plus its output cap, the cap lowered to what the budget has
left and written into the body the provider gets (:mod:`clawhq.llm.caps`), so the provider
cannot overshoot it. The hold is atomic per user: on PostgreSQL a transaction takes an advisory
lock on the user first; on SQLite every writing transaction takes the write lock (``BEGIN
IMMEDIATE``). Then one statement reads what the user spent this month (the ledger's monthly
total, :class:`~clawhq.db.models.LlmMonth`) and sums the live reservations (one snapshot,
taken after the lock), and the reservation is inserted.

Both are written from the event loop, as :mod:`clawhq.db.loop_reads` reads: a reservation on a
worker thread cost the server ~3 ms of CPU a call, most of it the thread's hand-offs of the
interpreter lock. PostgreSQL through psycopg's asyncio driver, on a pool of its own (a call
waiting for its user's lock holds a connection: not one of the token lookups'); SQLite on a
connection of the loop's that never waits for the file's lock (nor checkpoints): when another
writer holds it, the reservation is taken on a worker thread.

When the call ends, its ledger row and the deletion of its reservation are one transaction of
the ledger writer (:func:`clawhq.llm.ledger.record`): a sum sees the call either held or spent,
never neither. While a call lasts its process renews its reservation every
:data:`RENEW_EVERY` seconds; one not renewed for :data:`TTL` (its process died) counts no more
and is purged.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio.to_thread
import psycopg
from sqlalchemy import (
    Connection,
    Engine,
    Select,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    literal_column,
    select,
    update,
)
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import Session

from clawhq.db.budgets import LlmReservation
from clawhq.db.engine import normalize_url
from clawhq.db.models import new_id
from clawhq.errors import LlmRefused
from clawhq.llm import caps, limits
from clawhq.llm.callers import Caller
from clawhq.llm.ledger import MONTH_SPENT, month_params
from clawhq.llm.wires import Usage, Wire

log = logging.getLogger(__name__)

#: How long a reservation counts without being renewed.
TTL = timedelta(minutes=5)
#: How often a process renews the reservations of its calls in flight (and purges expired ones).
RENEW_EVERY = 60.0
#: The first key of the per-user advisory locks (PostgreSQL), apart from ClawHQ's other locks.
LOCK_SPACE = 0x4C4C4D52  # "LLMR"
#: PostgreSQL connections the reservations keep (as many again under load, then they wait).
PG_POOL_SIZE = 8
#: Bodies larger than this are read and written back on a worker thread, not on the loop.
INLINE_BODY = 64 << 10

_r = LlmReservation.__table__.c
_HELD_ALL = select(func.coalesce(func.sum(_r.tokens), literal_column("0"))).where(
    _r.user_id == bindparam("user_id"), _r.expires_at > bindparam("now")
)
_HELD = {
    False: _HELD_ALL.scalar_subquery(),
    True: _HELD_ALL.where(_r.key_source == bindparam("source")).scalar_subquery(),
}
#: Bundled keys only -> the month's spent tokens and the live reservations, in one statement.
_SUMS: dict[bool, Select[Any]] = {
    only: select(MONTH_SPENT[only].scalar_subquery().label("spent"), _HELD[only].label("held"))
    for only in (False, True)
}
_INSERT = insert(LlmReservation).values(
    {
        **{c: bindparam(c) for c in ("id", "user_id", "agent_id", "key_source", "tokens")},
        "created_at": bindparam("now"),
        "expires_at": bindparam("expires_at"),
    }
)
_SQLITE_BUSY = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
_LOCK = select(func.pg_advisory_xact_lock(bindparam("space"), func.hashtext(bindparam("user_id"))))


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


class _Taking:
    """One reservation being taken: the statements' parameters, then the cap the sums leave."""

    def __init__(self, caller: Caller, ask: caps.Ask, ttl: timedelta) -> None:
        assert caller.monthly_token_budget is not None, "only budgeted calls are reserved"
        self.caller, self.ask, self.bundled_only = caller, ask, not caller.budget_own_keys
        now = datetime.now(UTC)
        self.sums = {**month_params(caller.user_id, now, self.bundled_only), "now": now}
        self.row = {
            "id": new_id(),
            "user_id": caller.user_id,
            "agent_id": caller.agent_id,
            "key_source": caller.key_source,
            "now": now,
            "expires_at": now + ttl,
        }

    def cap(self, spent: int, held: int) -> int:
        """The call's output cap given the sums (and the row's tokens), or the budget's 429."""
        assert self.caller.monthly_token_budget is not None
        left = self.caller.monthly_token_budget - spent - held
        cap = limits.output_cap(self.ask, left, self.caller.tokens_per_minute)
        if cap is None:
            raise limits.budget_refusal(
                self.caller,
                f"has {max(left, 0)} tokens left ({spent} used, {held} held by calls in "
                f"flight): too few for this call's ~{self.ask.input_tokens} tokens of input "
                f"and {self.ask.minimum} of output",
            )
        self.row["tokens"] = self.ask.input_tokens + cap * self.ask.choices
        return cap


def take(conn: Connection, taking: _Taking) -> int:
    """Reserve a call in ``conn``'s transaction (its write lock held on SQLite): the cap."""
    if conn.dialect.name == "postgresql":
        conn.execute(_LOCK, _lock_params(taking))
    spent, held = conn.execute(_SUMS[taking.bundled_only], taking.sums).one()
    cap = taking.cap(int(spent), int(held))
    conn.execute(_INSERT, taking.row)
    return cap


def _lock_params(taking: _Taking) -> dict[str, Any]:
    return {"space": LOCK_SPACE, "user_id": taking.caller.user_id}


class _PostgresTaker:
    """Takes reservations on the loop: psycopg's asyncio driver, statements compiled once."""

    def __init__(self, url: str) -> None:
        self._engine = create_async_engine(
            url,
            pool_size=PG_POOL_SIZE,
            max_overflow=PG_POOL_SIZE,
            pool_timeout=5.0,
            isolation_level="AUTOCOMMIT",  # the transaction is psycopg's own, below
            connect_args={
                "options": "-c TimeZone=UTC",
                "application_name": "clawhq-llm-reservations",
            },
        )
        dialect = self._engine.dialect
        self._lock = str(_LOCK.compile(dialect=dialect))
        self._sums = {only: str(q.compile(dialect=dialect)) for only, q in _SUMS.items()}
        self._insert = str(_INSERT.compile(dialect=dialect))

    async def take(self, taking: _Taking) -> int:
        try:
            return await self._take(taking)
        except psycopg.OperationalError:
            await self._engine.dispose()  # the server dropped its connections: a new pool
        return await self._take(taking)  # a row of a try that failed at COMMIT only expires

    async def _take(self, taking: _Taking) -> int:
        async with self._engine.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            assert driver is not None  # a pooled connection always has its driver's
            # Pipelined: BEGIN, the lock and the sums go out together, then the INSERT and
            # COMMIT (the server runs them in order: the sums' snapshot follows the lock).
            async with driver.pipeline(), driver.transaction(), driver.cursor() as cursor:
                await cursor.execute(self._lock, _lock_params(taking))
                await cursor.execute(self._sums[taking.bundled_only], taking.sums)
                row = await cursor.fetchone()
                assert row is not None
                cap = taking.cap(int(row[0]), int(row[1]))
                await cursor.execute(self._insert, taking.row)
                return cap

    async def aclose(self) -> None:
        await self._engine.dispose()


class _SqliteTaker:
    """Takes reservations on the loop's own connection, which never waits: when another
    writer holds the file's lock, on a worker thread instead (``engine``'s, which waits)."""

    def __init__(self, url: str, engine: Engine) -> None:
        self._waiting = engine
        options = {"check_same_thread": False, "timeout": 0}
        self._loop = create_engine(url, connect_args=options, pool_size=1, max_overflow=0)

        @event.listens_for(self._loop, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # BEGIN IMMEDIATE below
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA busy_timeout=0")  # never wait on the loop
            cursor.execute("PRAGMA wal_autocheckpoint=0")  # and never checkpoint there
            cursor.execute("PRAGMA synchronous=NORMAL")  # no fsync at commit (under WAL)
            cursor.close()

        @event.listens_for(self._loop, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    async def take(self, taking: _Taking) -> int:
        try:
            with self._loop.begin() as conn:
                return take(conn, taking)
        except OperationalError as exc:
            if getattr(exc.orig, "sqlite_errorcode", 0) & 0xFF not in _SQLITE_BUSY:
                raise
        return await anyio.to_thread.run_sync(self._take_waiting, taking)

    def _take_waiting(self, taking: _Taking) -> int:
        with self._waiting.begin() as conn:
            return take(conn, taking)

    async def aclose(self) -> None:
        self._loop.dispose()


class Reservations:
    """This process's reservations: taken before their calls leave, renewed while they last."""

    def __init__(self, engine: Engine, url: str, ttl: timedelta = TTL) -> None:
        """``engine`` (the sessions') serves the writes that may wait; ``url`` is its URL."""
        self._engine, self._ttl = engine, ttl
        url = normalize_url(url)
        self._taker = (
            _PostgresTaker(url) if url.startswith("postgresql") else _SqliteTaker(url, engine)
        )
        self._lock = threading.Lock()
        self._live: set[str] = set()

    async def hold(self, caller: Caller, provider: str, wire: Wire, path: str, body: bytes) -> Held:
        """Reserve the call and cap its body, or refuse it (429 with the budget's code)."""
        inline = len(body) <= INLINE_BODY
        if inline:
            ask = caps.read_ask(wire, provider, path, body)
        else:
            ask = await anyio.to_thread.run_sync(caps.read_ask, wire, provider, path, body)
        taking = _Taking(caller, ask, self._ttl)
        try:
            cap = await self._taker.take(taking)
        except (SQLAlchemyError, psycopg.Error):
            log.warning("could not reserve a model call's budget", exc_info=True)
            raise LlmRefused(
                503,
                "unavailable",
                "llm_budget_unavailable",
                "the budget cannot be checked right now; try again shortly",
            ) from None
        reservation = str(taking.row["id"])
        with self._lock:  # from here on it is renewed, and its call must end it
            self._live.add(reservation)
        add = cap < caps.UNCAPPED_OUTPUT
        if inline:
            capped = caps.with_cap(ask, cap, body, add=add)
        else:
            capped = await anyio.to_thread.run_sync(lambda: caps.with_cap(ask, cap, body, add=add))
        if capped is None:  # parsed but not written back: never sent uncapped
            self.forget(reservation)
            await anyio.to_thread.run_sync(self._delete, reservation)
            raise LlmRefused(
                413, "too_large", "llm_request_unreadable", "the request body nests too deeply"
            )
        return Held(reservation, ask.input_tokens, cap * ask.choices, capped)

    def _delete(self, reservation: str) -> None:
        with self._engine.begin() as conn:
            conn.execute(delete(LlmReservation).where(LlmReservation.id == reservation))

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

    async def aclose(self) -> None:
        await self._taker.aclose()


def charged(held: Held | None, usage: Usage, status: int) -> Usage:
    """What a call is charged: the usage its answer reported; an answer that reported none
    (cut short, or a provider that sends none) costs its reservation, unless the provider said
    no (a status of 400 or more bills nothing)."""
    if held is None or usage.seen or status >= 400:
        return usage
    return Usage(
        input_tokens=held.input_tokens, output_tokens=held.output_tokens, model=usage.model
    )
