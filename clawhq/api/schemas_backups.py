"""Response bodies of workspace backups (docs/backups.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from clawhq.api.schemas import Schema


class BackupPublic(Schema):
    """One backup of an agent's workspace, and its latest restore."""

    id: str
    agent_id: str
    kind: Literal["manual", "import", "scheduled", "pre_restore"] = Field(
        description="pre_restore: the workspace a restore replaced, taken before it did"
    )
    status: Literal["CREATING", "READY", "FAILED"]
    size: int | None = Field(description="bytes stored (sealed)")
    plaintext_size: int | None = Field(description="bytes of the plain .tar.gz (a download)")
    sha256: str | None = Field(description="SHA-256 of the sealed object, checked on every read")
    error: str | None
    created_at: datetime
    finished_at: datetime | None
    restore_status: Literal["RESTORING", "RESTORED", "FAILED"] | None
    restore_error: str | None
    restore_started_at: datetime | None
    restore_finished_at: datetime | None
    restore_safety_id: str | None = Field(
        description="the pre_restore backup of the workspace the restore replaced"
    )


class BackupList(Schema):
    backups: list[BackupPublic]
