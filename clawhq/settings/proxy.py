"""The agent proxy: ClawHQ in front of every agent's gateway (docs/agent-access.md)."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator

from clawhq.setting_values import parse_size


class ProxySettings(BaseModel):
    proxy_connections_per_user: int = Field(
        default=20, ge=1, description="proxied connections to agents one user may hold open"
    )
    proxy_connections_total: int = Field(
        default=500, ge=1, description="proxied connections to agents open at once in all"
    )
    proxy_idle_seconds: float = Field(
        default=300.0, gt=0, description="seconds a proxied connection may carry nothing"
    )
    proxy_max_message: int = Field(
        default=parse_size("16m"),
        description="the largest WebSocket message or request body the proxy passes on",
    )
    proxy_timeout: float = Field(
        default=300.0,
        gt=0,
        description="seconds to wait for an agent's gateway to start answering (504 beyond); "
        "a chat turn that is not streamed answers only when it is done",
    )

    @field_validator("proxy_max_message", mode="before")
    @classmethod
    def _proxy_message(cls, value: str | int) -> int:
        return parse_size(value)
