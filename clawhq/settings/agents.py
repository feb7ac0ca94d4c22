"""Agent containers: image, limits, network, ports, health path, webhooks."""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Annotated

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import NoDecode

from clawhq.setting_values import parse_size
from clawhq.settings.service import http_url


class AgentSettings(BaseModel):
    agent_image: str = "clawhq-openclaw:latest"
    # An idle gateway holds ~850 MiB; its first agent turn is OOM-killed under 1 GiB
    # (docs/openclaw-image.md).
    agent_memory: int = Field(default=parse_size("2g"))
    agent_cpu_quota: int = Field(default=50_000, ge=1_000)
    agent_cpu_period: int = Field(default=100_000, ge=1_000, le=1_000_000)
    agent_pids_limit: int = Field(default=256, ge=16)
    agent_log_max_size: str = "10m"
    agent_log_max_files: int = Field(default=3, ge=1, le=100)
    agent_network: str = "clawhq-agents"
    agent_workspace_path: str = "/home/openclaw"
    agent_bind_ip: IPv4Address = IPv4Address("127.0.0.1")
    agent_internal_port: int = Field(default=18789, ge=1, le=65535)
    agent_health_path: str = "/healthz"
    agent_publish_ports: bool = Field(
        default=True,
        description="also publish each agent's gateway on a host port from the pool; ClawHQ "
        "itself reaches agents over the agent network either way",
    )
    port_range: Annotated[tuple[int, int], NoDecode] = (19000, 19999)
    stopped_lease_hours: float = Field(
        default=24.0,
        ge=0,
        description="hours a stopped agent keeps its port (0: for ever); then its container "
        "goes (the workspace stays) and it gets a new port on start",
    )
    agent_listener_port: int = Field(
        default=8001,
        ge=1,
        le=65535,
        description="the port on the agent network's gateway where agents reach ClawHQ: their "
        "webhook and the LLM gateway only (the user API is never served there)",
    )
    webhook_base_url: str | None = None
    webhook_dedup_hours: float = Field(
        default=24.0, gt=0, le=24 * 365, description="hours a usage eventId is remembered"
    )

    @field_validator("agent_memory", mode="before")
    @classmethod
    def _memory(cls, value: str | int) -> int:
        size = parse_size(value)
        if size < 6 * 1024**2:
            raise ValueError("must be at least 6m (Docker's minimum)")
        return size

    @field_validator("agent_log_max_size")
    @classmethod
    def _log_size(cls, value: str) -> str:
        parse_size(value)
        return value

    @field_validator("port_range", mode="before")
    @classmethod
    def _port_range(cls, value: str | tuple[int, int]) -> tuple[int, int]:
        if isinstance(value, str):
            parts = value.split("-")
            if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
                raise ValueError("must look like 19000-19999")
            value = (int(parts[0]), int(parts[1]))
        low, high = value
        if not 1024 <= low <= high <= 65535:
            raise ValueError("must be LOW-HIGH with 1024 <= LOW <= HIGH <= 65535")
        return (low, high)

    @field_validator("agent_health_path")
    @classmethod
    def _health_path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with /")
        return value

    @field_validator("webhook_base_url")
    @classmethod
    def _webhook(cls, value: str | None) -> str | None:
        return http_url(value)

    @property
    def port_count(self) -> int:
        return self.port_range[1] - self.port_range[0] + 1
