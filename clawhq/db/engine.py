"""Database engines and sessions for SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000
READ_ONLY = "clawhq_read_only"
# The API runs sync endpoints on a 40-thread pool and each request may hold two sessions:
# a pool smaller than that opens and closes connections under load, which costs far more
# than the queries (a PostgreSQL connection means a new backend and an auth handshake).
POOL_SIZE = 40
POOL_OVERFLOW = 40


def normalize_url(url: str) -> str:
    """Use psycopg 3 for ``postgresql://`` URLs (SQLAlchemy would pick psycopg2)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def create_db_engine(url: str) -> Engine:
    """An engine tuned for the backend: WAL and immediate write locks on SQLite."""
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            pool_size=POOL_SIZE,
            max_overflow=POOL_OVERFLOW,
        )
        _tune_sqlite(engine)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW)


def _tune_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN itself, below
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        # With WAL, NORMAL syncs at checkpoints rather than every commit: a crash of ClawHQ
        # loses nothing, a power cut may lose the last commits, which reconciliation repairs.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    # A deferred BEGIN lets two writers deadlock when both upgrade a read lock, so sessions
    # that may write take the write lock up front and queue on busy_timeout instead; read-only
    # sessions (see make_session_factory) begin deferred and run side by side.
    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = "DEFERRED" if conn.get_execution_options().get(READ_ONLY) else "IMMEDIATE"
        conn.exec_driver_sql(f"BEGIN {mode}")


def make_session_factory(engine: Engine, *, read_only: bool = False) -> sessionmaker[Session]:
    """Sessions that keep loaded objects after commit and record agents' history.

    ``read_only`` sessions are for requests that only read: on SQLite they do not take the
    write lock, so reads proceed in parallel (writing in them may fail with "busy").
    """
    from clawhq.db import history

    bind = engine.execution_options(**{READ_ONLY: True}) if read_only else engine
    sessions = sessionmaker(bind, expire_on_commit=False)
    history.install(sessions)
    return sessions
