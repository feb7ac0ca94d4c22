"""Agents' way out: the host firewall, egress policies and the forward proxy
(docs/network.md, docs/egress.md)."""

from __future__ import annotations

from ipaddress import IPv4Network
from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import NoDecode

from clawhq.setting_values import host_patterns, networks

# Private ranges agents may not open connections to (besides link-local/metadata, always).
DEFAULT_EGRESS_DENY = "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,100.64.0.0/10"


class NetworkSettings(BaseModel):
    firewall: Literal["auto", "off"] = "auto"
    agent_egress_deny: Annotated[tuple[IPv4Network, ...], NoDecode] = Field(
        default_factory=lambda: networks(DEFAULT_EGRESS_DENY)
    )
    egress_allow: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="hosts agents under the allowlist policy may reach through ClawHQ's "
        "forward proxy, besides their channels' chat platforms",
    )
    egress_proxy_port: int = Field(
        default=8002, ge=1, le=65535, description="the port of ClawHQ's forward proxy for agents"
    )
    egress_network: str = Field(
        default="clawhq-agents-egress",
        description="the agent network of plans whose egress policy is allowlist or none",
    )

    @field_validator("egress_allow", mode="before")
    @classmethod
    def _egress_allow(cls, value: str | tuple[str, ...]) -> tuple[str, ...]:
        return host_patterns(value if isinstance(value, str) else ",".join(value))

    @field_validator("agent_egress_deny", mode="before")
    @classmethod
    def _egress_deny(cls, value: str | tuple[IPv4Network, ...]) -> tuple[IPv4Network, ...]:
        return networks(value) if isinstance(value, str) else tuple(value)
