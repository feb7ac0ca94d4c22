"""Workspace disks: each workspace a filesystem of its own, capped (docs/disks.md)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, field_validator

from clawhq.setting_values import parse_size


class DiskSettings(BaseModel):
    agent_disk: int | None = Field(
        default=parse_size("2g"),
        description="the size of each agent's workspace filesystem, writes past it fail with "
        "ENOSPC in that agent only (a plan may set its own; off: no cap)",
    )
    disk_dir: Path = Field(
        default=Path("/var/lib/clawhq/disks"),
        description="where the workspace filesystem images live (on the disk they may fill)",
    )

    @field_validator("agent_disk", mode="before")
    @classmethod
    def _disk(cls, value: str | int | None) -> int | None:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("off", "")):
            return None
        size = parse_size(value)
        if size < 16 * 1024**2:
            raise ValueError("must be at least 16m (or off)")
        return size
