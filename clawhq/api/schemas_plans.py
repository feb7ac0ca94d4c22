"""Request bodies of the admin's plan settings that shape agents' containers."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from clawhq.api.schemas import Body, JsonInt
from clawhq.setting_values import parse_size

EgressPolicy = Literal["open", "allowlist", "none"]
MIN_DISK = 16 * 1024**2


class PlanEgressChange(Body):
    """``open``: any public address; ``allowlist``: out only through ClawHQ's forward proxy,
    to the agent's channels' platforms and CLAWHQ_EGRESS_ALLOW; ``none``: ClawHQ only."""

    policy: EgressPolicy


class PlanDiskChange(Body):
    """Each agent's workspace size, as bytes or a size such as ``4g`` (null: CLAWHQ_AGENT_DISK)."""

    agent_disk: JsonInt | str | None = Field(default=None)

    @field_validator("agent_disk")
    @classmethod
    def _size(cls, value: int | str | None) -> int | None:
        if value is None:
            return None
        size = parse_size(value)
        if size < MIN_DISK:
            raise ValueError("must be at least 16m")
        if size > 16 * 1024**4:
            raise ValueError("must be at most 16t")
        return size


class PlanBackupsChange(Body):
    """``daily``: ClawHQ backs each agent of the plan up once a day and keeps the newest
    ``backupKeep`` of those; ``off``: no scheduled backups (owners still take their own)."""

    backup_schedule: Literal["daily", "off"]
    backup_keep: JsonInt = Field(default=7, ge=1, le=365)
