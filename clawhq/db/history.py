"""Agents' lifecycle history, written in the same flush as the change it describes."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.orm import Session, sessionmaker

from clawhq.db.models import Agent, AgentEvent, new_id
from clawhq.status import AgentStatus, describe_transition


def record(session: Session, agent_id: str, kind: str, message: str) -> None:
    """Add a history entry that is not a status change (a step of a deploy, say)."""
    session.add(AgentEvent(agent_id=agent_id, kind=kind, message=message))


def _on_flush(session: Session, _context: Any, _instances: Any) -> None:
    for agent in list(session.new) + list(session.dirty):
        if not isinstance(agent, Agent):
            continue
        if agent in session.new:
            if agent.id is None:
                agent.id = new_id()  # the column default would come only at INSERT
            # Like the id, the status column's default (STOPPED) comes only at INSERT: None here
            # was written as the text "None".
            status = agent.status if agent.status is not None else AgentStatus.STOPPED
            session.add(AgentEvent(agent_id=agent.id, kind="created", status=str(status)))
            continue
        history = inspect(agent).attrs.status.history
        if not history.added or history.added == history.deleted:
            continue
        old = history.deleted[0] if history.deleted else None
        new = history.added[0]
        kind, message = describe_transition(
            old, new, agent.last_error, agent.next_restart_at is not None
        )
        session.add(AgentEvent(agent_id=agent.id, kind=kind, status=str(new), message=message))


def install(sessions: sessionmaker[Session]) -> None:
    """Record every status change of every agent flushed through ``sessions``."""
    event.listen(sessions, "before_flush", _on_flush)
