"""The agent proxy: ClawHQ in front of every agent's gateway (docs/agent-access.md)."""

from __future__ import annotations

import re

from pydantic import BaseModel, Field, field_validator

from clawhq.setting_values import parse_size

#: ``CLAWHQ_AGENT_ORIGIN``'s shape: an http(s) origin whose host holds ``{agent}`` once.
_AGENT_ORIGIN = re.compile(r"^https?://([a-z0-9.-]*)\{agent\}([a-z0-9.-]*)(:[0-9]{1,5})?$")


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

    agent_origin: str | None = Field(
        default=None,
        description="each agent's own browser origin, a template with {agent} in its host "
        "(https://{agent}.agents.example.com); the default http://{agent}.agents.localhost:PORT "
        "works in a browser on this machine with no DNS",
    )

    @field_validator("agent_origin")
    @classmethod
    def _agent_origin(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        value = value.strip().rstrip("/").lower()
        match = _AGENT_ORIGIN.match(value)
        if match is None or not (match.group(1) or match.group(2)):
            raise ValueError(
                "must be an origin with {agent} in its host, such as "
                "https://{agent}.agents.example.com (no path)"
            )
        return value

    @field_validator("proxy_max_message", mode="before")
    @classmethod
    def _proxy_message(cls, value: str | int) -> int:
        return parse_size(value)
