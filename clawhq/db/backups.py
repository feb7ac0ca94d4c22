"""The backups' table: one row per backup of an agent's workspace (docs/backups.md)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Boolean, Enum, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from clawhq.db.models import Base, UTCDateTime, new_id, utcnow


class BackupStatus(StrEnum):
    """Where a backup stands: being taken or imported, stored, or failed (nothing stored)."""

    CREATING = "CREATING"
    READY = "READY"
    FAILED = "FAILED"


class BackupKind(StrEnum):
    MANUAL = "manual"
    IMPORT = "import"
    SCHEDULED = "scheduled"
    #: Taken by a restore before it replaces the workspace: the workspace as it was.
    PRE_RESTORE = "pre_restore"


class RestoreStatus(StrEnum):
    RESTORING = "RESTORING"
    RESTORED = "RESTORED"
    FAILED = "FAILED"


class AgentBackup(Base):
    """One backup of an agent's workspace: a sealed object in the backup store
    (docs/backups.md). Rows outlive their agent (no foreign key to it): a deleted agent's
    backups stay until an operator prunes them. Every write is in controller/backup_rows.py."""

    __tablename__ = "agent_backups"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    agent_id: Mapped[str] = mapped_column(String(32), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[BackupKind] = mapped_column(
        Enum(BackupKind, native_enum=False, length=16, validate_strings=True)
    )
    status: Mapped[BackupStatus] = mapped_column(
        Enum(BackupStatus, native_enum=False, length=16, validate_strings=True),
        default=BackupStatus.CREATING,
    )
    #: The object's key in the backup store.
    store_key: Mapped[str] = mapped_column(String(512))
    #: The sealed object's size and SHA-256 (checked on every read), once READY.
    size: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    #: The plain tar.gz's size (what a download is).
    plaintext_size: Mapped[int | None] = mapped_column(BigInteger)
    key_id: Mapped[str | None] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The latest restore of this backup into its agent, if any.
    restore_status: Mapped[RestoreStatus | None] = mapped_column(
        Enum(RestoreStatus, native_enum=False, length=16, validate_strings=True)
    )
    restore_error: Mapped[str | None] = mapped_column(Text)
    restore_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    restore_finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The ``pre_restore`` backup a restore took of the workspace it replaced.
    restore_safety_id: Mapped[str | None] = mapped_column(String(32))
    #: Whether the job holding the agent (this backup, or its restore) starts it again when done.
    restart_agent: Mapped[bool] = mapped_column(Boolean, default=False)
