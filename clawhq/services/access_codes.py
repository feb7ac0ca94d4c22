"""One-time codes for the hand-off from ClawHQ's origin to an agent's own: issued to the
agent's owner on ClawHQ's origin, redeemed once, within a minute, on the agent's origin (the
way JupyterHub's subdomain mode and OAuth authorisation codes hand a login over)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.orm import Session

from clawhq.credentials import hash_token
from clawhq.db.models import AgentAccessCode

CODE_SECONDS = 60.0


def issue(session: Session, agent_id: str, user_id: str) -> str:
    """A new code for ``user_id`` to open ``agent_id`` (committed); expired ones are pruned."""
    now = datetime.now(UTC)
    session.execute(delete(AgentAccessCode).where(AgentAccessCode.expires_at < now))
    code = secrets.token_urlsafe(32)
    session.add(
        AgentAccessCode(
            code_hash=hash_token(code),
            agent_id=agent_id,
            user_id=user_id,
            expires_at=now + timedelta(seconds=CODE_SECONDS),
        )
    )
    session.commit()
    return code


def redeem(session: Session, code: str, agent_id: str) -> str | None:
    """The user a code was issued to, if it is for ``agent_id``, unexpired and unused; it is
    gone afterwards either way (committed: two redemptions never both succeed)."""
    if not code or len(code) > 128:
        return None
    statement = (
        delete(AgentAccessCode)
        .where(AgentAccessCode.code_hash == hash_token(code))
        .returning(AgentAccessCode.agent_id, AgentAccessCode.user_id, AgentAccessCode.expires_at)
    )
    row = session.execute(statement).one_or_none()
    session.commit()
    if row is None or row.agent_id != agent_id or row.expires_at < datetime.now(UTC):
        return None
    return str(row.user_id)
