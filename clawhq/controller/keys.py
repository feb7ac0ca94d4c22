"""What the controller's work queue holds: keys naming the object to sync, never the object."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AgentKey:
    agent_id: str


@dataclass(frozen=True, slots=True)
class RolloutKey:
    rollout_id: str


Key = AgentKey | RolloutKey
