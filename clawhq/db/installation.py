"""This installation's identity, kept in its database."""

from __future__ import annotations

import uuid

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from clawhq.db.models import Meta

INSTANCE_KEY = "instance_id"


def instance_id(sessions: sessionmaker[Session]) -> str:
    """The installation's id, created on first use (two processes racing agree on one)."""
    with sessions() as session:
        row = session.get(Meta, INSTANCE_KEY)
        if row is not None:
            return row.value
        session.add(Meta(key=INSTANCE_KEY, value=uuid.uuid4().hex[:16]))
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
        row = session.get(Meta, INSTANCE_KEY)
        assert row is not None
        return row.value
