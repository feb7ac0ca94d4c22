"""The LLM budget's tables: each user's monthly totals of the ledger, and the reservations of
the model calls in flight (docs/llm-gateway.md)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from clawhq.db.models import Base, UTCDateTime, new_id, utcnow


class LlmMonth(Base):
    """What a user's calls cost in one calendar month (UTC), per key source: the ledger's sum,
    kept in step by a trigger on ``llm_calls`` (migration 0013), so a budget is read in one row
    rather than summed over the month's calls."""

    __tablename__ = "llm_months"

    user_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    #: ``YYYY-MM``.
    month: Mapped[str] = mapped_column(String(7), primary_key=True)
    key_source: Mapped[str] = mapped_column(String(8), primary_key=True)
    tokens: Mapped[int] = mapped_column(BigInteger, default=0)


class LlmReservation(Base):
    """Tokens a model call in flight may still use: its estimated input and its output cap,
    counted against its owner's budget until the call's ledger row replaces it (in the same
    transaction). Its process renews ``expires_at`` while the call lasts; a row past it (its
    process died) counts no more and is purged. No foreign keys, like the ledger it stands
    in for."""

    __tablename__ = "llm_reservations"
    __table_args__ = (Index("ix_llm_reservations_user_id_expires_at", "user_id", "expires_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(String(32))
    agent_id: Mapped[str] = mapped_column(String(32))
    #: ``own`` or ``bundled``, as in the ledger: a budget of bundled keys counts only those.
    key_source: Mapped[str] = mapped_column(String(8))
    tokens: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
