"""Audit records for API actions: who (from the request), what, which agent, result."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from clawhq.api.deps import Context, DbSession
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
        if result != "ok":
            # A failed operation may have left the request's write transaction open; on SQLite
            # it holds the lock the audit row needs. What failed is not kept anyway.
            self._session.rollback()
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
            client=self._request.client.host if self._request.client else None,
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
