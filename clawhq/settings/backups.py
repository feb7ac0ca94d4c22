"""Workspace backups: where they are stored and how big an uploaded archive may be."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

from clawhq.setting_values import parse_size
from clawhq.settings.service import http_url


class BackupSettings(BaseModel):
    backup_dir: Path | None = Field(
        default=None,
        description="the directory backups are stored in when no S3 bucket is configured "
        "(default: DATA_DIR/backups)",
    )
    backup_s3_bucket: str | None = Field(
        default=None, description="store backups in this S3(-compatible) bucket instead"
    )
    backup_s3_endpoint: str | None = Field(
        default=None,
        description="the S3-compatible server's URL (default: AWS); path-style addressing",
    )
    backup_s3_region: str | None = None
    backup_s3_access_key_id: str | None = Field(
        default=None, description="with the secret below; unset: boto3's usual credential chain"
    )
    backup_s3_secret_access_key: SecretStr | None = None
    backup_max_upload: int = Field(
        default=parse_size("2g"), description="the largest workspace archive a user may upload"
    )
    backup_max_unpacked: int = Field(
        default=parse_size("4g"),
        description="the most an uploaded archive may unpack to (tar headers included)",
    )
    backup_check_interval: float = Field(
        default=300.0,
        ge=0,
        description="seconds between looks for agents due a scheduled backup (0: never)",
    )
    backup_max_members: int = Field(
        default=100_000, ge=1, description="the most files and directories an upload may hold"
    )

    @field_validator("backup_max_upload", "backup_max_unpacked", mode="before")
    @classmethod
    def _backup_sizes(cls, value: str | int) -> int:
        size = parse_size(value)
        if size < 1024**2:
            raise ValueError("must be at least 1m")
        return size

    @field_validator("backup_s3_endpoint")
    @classmethod
    def _backup_s3_endpoint(cls, value: str | None) -> str | None:
        return http_url(value)

    @field_validator("backup_s3_bucket", "backup_s3_region", "backup_s3_access_key_id")
    @classmethod
    def _backup_s3_text(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return value.strip() or None

    @model_validator(mode="after")
    def _backup_s3_credentials(self) -> BackupSettings:
        secret = self.backup_s3_secret_access_key
        has_secret = secret is not None and bool(secret.get_secret_value())
        if has_secret != (self.backup_s3_access_key_id is not None):
            raise ValueError(
                "CLAWHQ_BACKUP_S3_ACCESS_KEY_ID and CLAWHQ_BACKUP_S3_SECRET_ACCESS_KEY go together"
            )
        return self
