"""Events that agent containers post back: heartbeats and usage, authenticated per agent.

Usage events are counted once per ``eventId``; the ids are kept for a bounded window
(:class:`DedupWindow`): older rows are pruned, and one agent keeps at most
``max_per_agent`` of them, so no agent can grow ``webhook_events`` without bound.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from clawhq.credentials import token_matches
from clawhq.db.models import Agent, WebhookEvent
from clawhq.errors import Unauthorized

log = logging.getLogger(__name__)

#: Event ids one agent keeps at most, whatever the window (the newest are kept).
MAX_EVENTS_PER_AGENT = 10_000
#: Seconds between two prunes of the whole table by age, in one process.
PRUNE_INTERVAL = 60.0
#: Usage events of one agent between two checks of its row count, in one process.
CAP_CHECK_EVERY = 100
_MAX_TRACKED = 100_000


class DedupWindow:
    """How long, and how many, usage event ids are remembered; prunes the rest.

    Pruning is opportunistic, on the usage path: a ``DELETE ... WHERE received_at < cutoff``
    at most every ``prune_interval`` seconds per process, and a count of the agent's rows
    every ``check_every`` of its events (the oldest beyond ``max_per_agent`` are deleted). An
    id older than the window, or beyond the cap, may therefore be counted again if resent.
    """

    def __init__(
        self,
        hours: float,
        *,
        max_per_agent: int = MAX_EVENTS_PER_AGENT,
        prune_interval: float = PRUNE_INTERVAL,
        check_every: int = CAP_CHECK_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window = timedelta(hours=hours)
        self.max_per_agent = max_per_agent
        self.prune_interval = prune_interval
        self.check_every = check_every
        self._clock = clock
        self._last_prune: float | None = None
        self._since_check: dict[str, int] = {}
        self._lock = threading.Lock()

    def _prune_due(self) -> bool:
        now = self._clock()
        with self._lock:
            if self._last_prune is not None and now - self._last_prune < self.prune_interval:
                return False
            self._last_prune = now
            return True

    def _check_due(self, agent_id: str) -> bool:
        with self._lock:
            if len(self._since_check) >= _MAX_TRACKED:
                self._since_check.clear()
            seen = self._since_check.get(agent_id, 0) + 1
            if seen < self.check_every:
                self._since_check[agent_id] = seen
                return False
            self._since_check[agent_id] = 0
            return True

    def prune(self, session: Session, agent_id: str, now: datetime) -> None:
        """Forget what is due to be forgotten (commits; a failure is logged, not raised)."""
        prune, check = self._prune_due(), self._check_due(agent_id)
        if not (prune or check):
            return
        try:
            if prune:
                session.execute(
                    delete(WebhookEvent).where(WebhookEvent.received_at < now - self.window)
                )
            if check:
                self._cap(session, agent_id)
            session.commit()
        except SQLAlchemyError as exc:  # the usage is counted already; the next prune retries
            session.rollback()
            log.warning("pruning webhook events failed: %s", exc)

    def _cap(self, session: Session, agent_id: str) -> None:
        mine = WebhookEvent.agent_id == agent_id
        count = session.scalar(select(func.count()).select_from(WebhookEvent).where(mine)) or 0
        excess = count - self.max_per_agent
        if excess <= 0:
            return
        oldest = (
            select(WebhookEvent.event_id)
            .where(mine)
            .order_by(WebhookEvent.received_at, WebhookEvent.event_id)
            .limit(excess)
        )
        session.execute(delete(WebhookEvent).where(mine, WebhookEvent.event_id.in_(oldest)))


def authenticate_agent(session: Session, agent_id: str, token: str | None) -> Agent:
    """The agent whose current webhook token this is; anything else is a 401."""
    agent = session.get(Agent, agent_id)
    if (
        token is None
        or agent is None
        or agent.webhook_token_hash is None
        or not token_matches(token, agent.webhook_token_hash)
    ):
        raise Unauthorized("invalid webhook token", code="invalid_webhook_token")
    return agent


def record_heartbeat(session: Session, agent: Agent) -> None:
    agent.last_heartbeat = datetime.now(UTC)
    session.commit()


def record_usage(
    session: Session,
    agent: Agent,
    event_id: str,
    messages: int,
    window: DedupWindow | None = None,
) -> bool:
    """Add the messages an agent reports to its total once per ``event_id``; False for a
    repeated event. Tokens are not taken from agents: the LLM gateway meters them."""
    now = datetime.now(UTC)
    agent_id = agent.id
    try:
        session.add(WebhookEvent(agent_id=agent_id, event_id=event_id, received_at=now))
        session.flush()
    except IntegrityError:
        session.rollback()
        return False
    session.execute(
        update(Agent)
        .where(Agent.id == agent_id)
        .values(
            total_messages=Agent.total_messages + messages,
            last_active_at=now,
        )
    )
    session.commit()
    if window is not None:
        window.prune(session, agent_id, now)
    return True
