"""Every write to a backup's row (tests/unit/test_column_owners.py): its taking and its restore."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from clawhq.backups import BackupRecord
from clawhq.db.backups import AgentBackup, BackupKind, BackupStatus, RestoreStatus
from clawhq.db.models import new_id

#: Errors kept on a row are cut to this many characters.
MAX_ERROR = 2000


def store_key(user_id: str, agent_id: str, backup_id: str) -> str:
    """Where a backup's sealed object lives in the store."""
    return f"{user_id}/{agent_id}/{backup_id}.clawbk"


def new_backup(
    session: Session, agent_id: str, user_id: str, kind: BackupKind, now: datetime
) -> AgentBackup:
    backup_id = new_id()
    row = AgentBackup(
        id=backup_id,
        agent_id=agent_id,
        user_id=user_id,
        kind=kind,
        status=BackupStatus.CREATING,
        store_key=store_key(user_id, agent_id, backup_id),
        created_at=now,
        restart_agent=False,
    )
    session.add(row)
    return row


def holding_agent(row: AgentBackup, restart: bool) -> None:
    """The job stopped the agent: start it again when done (also after a ClawHQ restart)."""
    row.restart_agent = restart


def ready(row: AgentBackup, record: BackupRecord, now: datetime) -> None:
    row.status = BackupStatus.READY
    row.size, row.sha256 = record.size, record.sha256
    row.plaintext_size, row.key_id = record.plaintext_size, record.key_id
    row.error, row.finished_at = None, now


def failed(row: AgentBackup, error: str, now: datetime) -> None:
    row.status = BackupStatus.FAILED
    row.size = row.sha256 = row.plaintext_size = row.key_id = None
    row.error, row.finished_at = error[:MAX_ERROR], now


def resealed(row: AgentBackup, record: BackupRecord) -> None:
    row.size, row.sha256, row.key_id = record.size, record.sha256, record.key_id


def restore_begins(row: AgentBackup, restart: bool, now: datetime) -> None:
    row.restore_status = RestoreStatus.RESTORING
    row.restore_error = row.restore_finished_at = row.restore_safety_id = None
    row.restore_started_at = now
    row.restart_agent = restart


def restore_safety(row: AgentBackup, safety_id: str) -> None:
    """The ``pre_restore`` backup of the workspace this restore replaces."""
    row.restore_safety_id = safety_id


def restore_done(row: AgentBackup, now: datetime) -> None:
    row.restore_status, row.restore_finished_at = RestoreStatus.RESTORED, now


def restore_failed(row: AgentBackup, error: str, now: datetime) -> None:
    row.restore_status, row.restore_finished_at = RestoreStatus.FAILED, now
    row.restore_error = error[:MAX_ERROR]
