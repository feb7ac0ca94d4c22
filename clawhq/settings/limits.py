"""What one caller, one agent or the whole service may take: rates, streams, connections."""

from __future__ import annotations

from pydantic import BaseModel, Field


class LimitSettings(BaseModel):
    rate_limit_auth: int = Field(default=10, ge=1, description="login/register per IP a minute")
    rate_limit_user: int = Field(default=600, ge=1, description="requests per user a minute")
    rate_limit_webhook: int = Field(
        default=120, ge=1, description="webhook posts per agent a minute"
    )
    rate_limit_register: int = Field(
        default=5, ge=1, description="accounts registered per IP an hour"
    )
    rate_limit_login_account: int = Field(
        default=20, ge=1, description="failed logins per account (email) an hour"
    )
    max_users: int = Field(default=0, ge=0, description="accounts that may register (0: no cap)")
    streams_per_user: int = Field(
        default=5, ge=1, description="Server-Sent Event streams one user may hold open"
    )
    streams_total: int = Field(
        default=200, ge=1, description="Server-Sent Event streams open at once in all"
    )
    stream_max_seconds: float = Field(
        default=3600.0, gt=0, description="the longest a stream lives before it ends"
    )
    max_connections: int = Field(
        default=1000, ge=1, description="connections `clawhq serve` takes at once (503 beyond)"
    )
