"""One row by its key, read without leaving the API's event loop.

A trip to the thread pool, with the hand-offs of the interpreter lock that follow it, costs
more than a primary-key read: the API benchmark counted 28 context switches per request when
the read ran on a worker thread, none on the loop (bench/RESULTS.md). So the hottest reads
(``GET /api/agents/{id}``, which clients poll while deploying) run here:

- SQLite is in-process, and under WAL a reader never waits for a writer. The loop keeps its own
  read-only connection whose busy timeout is zero: a read that would have to wait (while WAL
  recovery runs, say) fails at once and is done on the thread pool instead of stalling the loop.
- PostgreSQL is read through psycopg's asyncio driver, so the loop awaits the socket. The
  connections come from SQLAlchemy's asyncio pool (connected on demand: a database that comes
  back is used at once), but the statement runs on the driver itself: SQLAlchemy's execution
  layer cost about 400 µs of CPU a query here, more than the rest of the request. The
  statement is still built with SQLAlchemy and compiled once, so it follows the models.
  Connections run in autocommit (one statement: no BEGIN and ROLLBACK round trips) and in UTC,
  so rows carry what the ORM's columns would give.

Only short reads by key belong here; listings and searches go through the thread pool.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Protocol

import anyio.to_thread
import psycopg
from psycopg.rows import dict_row
from sqlalchemy import Connection, Engine, Select, create_engine, event
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import create_async_engine

from clawhq.db.engine import READ_ONLY, normalize_url
from clawhq.errors import DatabaseUnavailable

Row = dict[str, Any]

#: PostgreSQL connections the loop keeps; as many again are opened under load, then reads wait.
PG_POOL_SIZE = 10
#: How long a read waits for a PostgreSQL connection before answering 503.
PG_POOL_TIMEOUT = 2.0
#: How these connections show in ``pg_stat_activity``.
PG_APPLICATION_NAME = "clawhq-loop-reads"
_SQLITE_BUSY = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


class LoopReads(Protocol):
    async def first(self, statement: Select[Any], **params: Any) -> Row | None:
        """The statement's first row as a dict (None without one)."""
        ...

    async def aclose(self) -> None:
        """Close the connections (on the loop that used them)."""
        ...


class SqliteLoopReads:
    """SQLite reads on the loop's own connection; the thread pool when they would wait."""

    def __init__(self, url: str, engine: Engine) -> None:
        self._engine = _loop_sqlite_engine(url)
        self._fallback = engine.execution_options(**{READ_ONLY: True})

    async def first(self, statement: Select[Any], **params: Any) -> Row | None:
        try:
            with self._engine.connect() as conn:
                return _first(conn, statement, params)
        except OperationalError as exc:
            if getattr(exc.orig, "sqlite_errorcode", 0) & 0xFF not in _SQLITE_BUSY:
                raise
        return await anyio.to_thread.run_sync(self._first_waiting, statement, params)

    def _first_waiting(self, statement: Select[Any], params: dict[str, Any]) -> Row | None:
        with self._fallback.connect() as conn:
            return _first(conn, statement, params)

    async def aclose(self) -> None:
        self._engine.dispose()


class PostgresLoopReads:
    """PostgreSQL reads through psycopg's asyncio driver, on SQLAlchemy's connection pool."""

    def __init__(self, url: str) -> None:
        self._engine = create_async_engine(
            url,
            pool_size=PG_POOL_SIZE,
            max_overflow=PG_POOL_SIZE,
            pool_timeout=PG_POOL_TIMEOUT,
            isolation_level="AUTOCOMMIT",
            connect_args={"options": "-c TimeZone=UTC", "application_name": PG_APPLICATION_NAME},
        )
        self._dialect = self._engine.dialect
        self._compiled: dict[int, tuple[Select[Any], str]] = {}

    async def first(self, statement: Select[Any], **params: Any) -> Row | None:
        sql = self._sql(statement)
        try:
            return await self._fetch(sql, params)
        except PoolTimeout as exc:  # every connection busy for PG_POOL_TIMEOUT
            raise _unavailable() from exc
        except psycopg.OperationalError:
            # Most likely the server dropped its connections (it restarted): start a new pool,
            # as SQLAlchemy does when it sees a disconnect itself, and try once more.
            await self._engine.dispose()
        try:
            return await self._fetch(sql, params)
        except psycopg.OperationalError as exc:
            raise _unavailable() from exc

    async def _fetch(self, sql: str, params: dict[str, Any]) -> Row | None:
        # Connecting may fail too: SQLAlchemy's OperationalError, which the API answers with 503.
        async with self._engine.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            assert driver is not None  # a pooled connection always has its driver's
            async with driver.cursor(row_factory=dict_row) as cursor:
                await cursor.execute(sql, params)
                row: Row | None = await cursor.fetchone()
                return row

    def _sql(self, statement: Select[Any]) -> str:
        # Keyed by identity and holding the statement, so an id is never reused while cached.
        cached = self._compiled.get(id(statement))
        if cached is None:
            cached = (statement, str(statement.compile(dialect=self._dialect)))
            self._compiled[id(statement)] = cached
        return cached[1]

    async def aclose(self) -> None:
        await self._engine.dispose()


def make_loop_reads(url: str, engine: Engine) -> LoopReads:
    """Loop reads for the database at ``url``; ``engine`` serves SQLite reads that must wait."""
    url = normalize_url(url)
    if url.startswith("sqlite"):
        return SqliteLoopReads(url, engine)
    return PostgresLoopReads(url)


def _unavailable() -> DatabaseUnavailable:
    return DatabaseUnavailable("the database is unavailable; try again shortly")


def _first(conn: Connection, statement: Select[Any], params: dict[str, Any]) -> Row | None:
    row = conn.execute(statement, params).mappings().first()
    return dict(row) if row is not None else None


def _loop_sqlite_engine(url: str) -> Engine:
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 0},
        pool_size=1,
        max_overflow=0,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Autocommit: each read is one statement, so SQLite's implicit transaction suffices.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA busy_timeout=0")  # never wait on the loop
        cursor.execute("PRAGMA query_only=1")  # and never write from it
        cursor.close()

    return engine
