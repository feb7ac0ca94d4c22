"""Key rotation: re-seal every stored secret under the current encryption key.

Rows are re-sealed one transaction each, so ClawHQ keeps serving meanwhile: a row not yet
rotated still opens with its old key (``CLAWHQ_ENCRYPTION_KEYS_OLD``).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from clawhq.crypto import Keyring, Sealed
from clawhq.db.models import Agent

#: Each sealed secret of an agent: its column prefix and the property naming its context.
SEALED_COLUMNS = (
    ("api_key", "api_key_context"),
    ("channel_secrets", "channel_secrets_context"),
    ("proxy_identity", "proxy_identity_context"),
)


@dataclass(frozen=True)
class Rotation:
    key_id: str
    rotated: int
    already_current: int


def rotate(sessions: sessionmaker[Session], keyring: Keyring) -> Rotation:
    current = keyring.current_key_id
    with sessions() as session:
        total = len(session.scalars(select(Agent.id)).all())
        stale = session.scalars(
            select(Agent.id).where(
                or_(
                    Agent.api_key_key_id != current,
                    Agent.channel_secrets_key_id != current,
                    Agent.proxy_identity_key_id != current,
                )
            )
        ).all()
    rotated = 0
    for agent_id in stale:
        with sessions.begin() as session:
            agent = session.scalars(
                select(Agent).where(Agent.id == agent_id).with_for_update()
            ).one_or_none()
            if agent is None:
                continue
            for column, context in SEALED_COLUMNS:
                ciphertext = getattr(agent, f"{column}_ciphertext")
                key_id = getattr(agent, f"{column}_key_id")
                if ciphertext is not None and key_id:
                    sealed = keyring.reseal(Sealed(ciphertext, key_id), getattr(agent, context))
                    setattr(agent, f"{column}_ciphertext", sealed.ciphertext)
                    setattr(agent, f"{column}_key_id", sealed.key_id)
            rotated += 1
    return Rotation(current, rotated, total - rotated)
