"""Audit records for API actions: who (from the request), what, which agent, result."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from clawhq.api.deps import Context, DbSession, client_of
from clawhq.context import AppContext
from clawhq.db import audit
from clawhq.errors import ClawHQError
from clawhq.observability import logs


class AuditTrail:
    """Records one request's audited actions; failures keep their error code."""

    def __init__(self, context: AppContext, request: Request, session: Session) -> None:
        self._context = context
        self._request = request
        self._session = session

    def record(
        self,
        action: str,
        result: str = "ok",
        *,
        agent_id: str | None = None,
        target_user_id: str | None = None,
        user_id: str | None = None,
        detail: str = "",
    ) -> None:
        # The audit row is written on a session of its own, and on SQLite the request's open
        # transaction holds the write lock it needs (it waited out the 30 s busy timeout and was
        # lost). After a failure, what failed is not kept; after a success the action has
        # committed its work, and what is still open is a read since (a refresh, say).
        if result != "ok":
            self._session.rollback()
        elif self._session.in_transaction():
            self._session.commit()
        state = self._request.state
        acting = user_id or getattr(state, "user_id", None)
        actor = (
            "admin" if getattr(state, "is_admin", False) else ("user" if acting else "anonymous")
        )
        audit.append(
            self._context.sessions,
            actor=actor,
            action=action,
            result=result,
            user_id=acting,
            agent_id=agent_id,
            target_user_id=target_user_id,
            detail=detail,
            client=client_of(self._request) or None,
            request_id=logs.request_id.get(),
        )

    @contextlib.contextmanager
    def action(
        self, name: str, *, agent_id: str | None = None, target_user_id: str | None = None
    ) -> Iterator[None]:
        """Record ``name`` as ok, or as ``error:<code>`` with its message, then re-raise."""
        try:
            yield
        except ClawHQError as exc:
            self.record(
                name,
                f"error:{exc.code}",
                agent_id=agent_id,
                target_user_id=target_user_id,
                detail=exc.message,
            )
            raise
        self.record(name, agent_id=agent_id, target_user_id=target_user_id)


def get_audit(request: Request, context: Context, session: DbSession) -> AuditTrail:
    return AuditTrail(context, request, session)


Audit = Annotated[AuditTrail, Depends(get_audit)]
