"""Proxied traffic is activity: it moves the agent's ``lastActiveAt``, at most once a minute
per agent (a page load is dozens of requests; one write is enough)."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime

from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from clawhq.db.models import Agent

log = logging.getLogger(__name__)

#: Seconds between two writes of one agent's ``lastActiveAt``.
EVERY = 60.0


class Activity:
    def __init__(self, sessions: sessionmaker[Session], every: float = EVERY) -> None:
        self._sessions = sessions
        self._every = every
        self._lock = threading.Lock()
        self._written: dict[str, float] = {}

    def due(self, agent_id: str) -> bool:
        """Whether this agent's activity should be written now (and claims the write)."""
        now = time.monotonic()
        with self._lock:
            if now - self._written.get(agent_id, -self._every) < self._every:
                return False
            if len(self._written) > 100_000:
                self._written.clear()
            self._written[agent_id] = now
            return True

    def record(self, agent_id: str) -> None:
        """Write ``lastActiveAt`` = now (blocking; call it where a thread may wait)."""
        try:
            with self._sessions.begin() as session:
                session.execute(
                    update(Agent)
                    .where(Agent.id == agent_id)
                    .values(last_active_at=datetime.now(UTC))
                    .execution_options(synchronize_session=False)
                )
        except SQLAlchemyError as exc:  # activity is worth a retry, not a failed request
            log.warning("could not record activity of agent %s: %s", agent_id, exc)
            with self._lock:
                self._written.pop(agent_id, None)
