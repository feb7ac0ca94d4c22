"""The audit log: appended to in a transaction of its own, so failed operations are kept too."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from clawhq.db.models import AuditEvent

log = logging.getLogger(__name__)

MAX_DETAIL = 500


def append(
    sessions: sessionmaker[Session],
    *,
    actor: str,
    action: str,
    result: str = "ok",
    user_id: str | None = None,
    agent_id: str | None = None,
    target_user_id: str | None = None,
    detail: str = "",
    client: str | None = None,
    request_id: str | None = None,
) -> None:
    """Record one event. A database failure is logged, never raised: the audited operation
    has already happened (or failed) and must report its own outcome."""
    try:
        with sessions.begin() as session:
            session.add(
                AuditEvent(
                    actor=actor,
                    action=action,
                    result=result[:64],
                    user_id=user_id,
                    agent_id=agent_id,
                    target_user_id=target_user_id,
                    detail=detail[:MAX_DETAIL],
                    client=(client or "")[:64] or None,
                    request_id=request_id,
                )
            )
    except SQLAlchemyError as exc:
        log.error("audit event %s %s not recorded: %s", action, result, type(exc).__name__)


def search(
    session: Session,
    *,
    limit: int,
    before: int | None = None,
    action: str | None = None,
    user_id: str | None = None,
    agent_id: str | None = None,
    since: datetime | None = None,
) -> list[AuditEvent]:
    """Newest first, filtered; ``before`` pages backwards by id."""
    query = select(AuditEvent)
    if before is not None:
        query = query.where(AuditEvent.id < before)
    if action:
        query = query.where(AuditEvent.action.startswith(action))
    if user_id:
        query = query.where(AuditEvent.user_id == user_id)
    if agent_id:
        query = query.where(AuditEvent.agent_id == agent_id)
    if since is not None:
        query = query.where(AuditEvent.at >= since)
    return list(session.scalars(query.order_by(AuditEvent.id.desc()).limit(limit)))
