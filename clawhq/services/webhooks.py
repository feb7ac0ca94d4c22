"""Events that agent containers post back: heartbeats and usage, authenticated per agent."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from clawhq.credentials import token_matches
from clawhq.db.models import Agent, WebhookEvent
from clawhq.errors import Unauthorized


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


def record_usage(session: Session, agent: Agent, event_id: str, messages: int, tokens: int) -> bool:
    """Add usage to the agent's totals once per ``event_id``; False for a repeated event."""
    now = datetime.now(UTC)
    try:
        session.add(WebhookEvent(agent_id=agent.id, event_id=event_id, received_at=now))
        session.flush()
    except IntegrityError:
        session.rollback()
        return False
    session.execute(
        update(Agent)
        .where(Agent.id == agent.id)
        .values(
            total_messages=Agent.total_messages + messages,
            total_tokens=Agent.total_tokens + tokens,
            last_active_at=now,
        )
    )
    session.commit()
    return True
