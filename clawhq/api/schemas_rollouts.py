"""Rollout and image-pin bodies for the admin API (camelCase, like ``schemas``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import Field, StringConstraints, model_validator

from clawhq.api.schemas import Body, JsonInt, Schema

#: An image reference as the engine takes it: ``name[:tag]``, ``registry/name@sha256:…``.
ImageRef = Annotated[
    str,
    StringConstraints(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$"),
]
AgentIdItem = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
]
PlanName = Annotated[
    str, StringConstraints(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_-]+$")
]


class RolloutCreate(Body):
    """Which agents (exactly one of ``agents``, ``plan``, ``all``) move to which image."""

    image: ImageRef | None = Field(
        default=None, description="The image to move to (none: the agents' current spec)."
    )
    agents: list[AgentIdItem] | None = Field(
        default=None, min_length=1, max_length=500, description="At most 500: else plan or all."
    )
    plan: PlanName | None = None
    all: bool = False
    max_unavailable: JsonInt = Field(default=1, ge=1, le=1000)
    max_failures: JsonInt = Field(default=1, ge=1, le=10_000)

    @model_validator(mode="after")
    def _one_selector(self) -> RolloutCreate:
        chosen = [self.agents is not None, self.plan is not None, self.all]
        if sum(chosen) != 1:
            raise ValueError("give exactly one of: agents, plan, all")
        return self

    def selector(self) -> dict[str, Any]:
        if self.agents is not None:
            return {"agents": list(dict.fromkeys(self.agents))}
        if self.plan is not None:
            return {"plan": self.plan}
        return {"all": True}


class RolloutMember(Schema):
    agent_id: str
    state: str = Field(description="pending, updating, done, rolling_back, rolled_back, skipped")
    previous_image: str | None
    reason: str | None
    started_at: datetime | None
    finished_at: datetime | None


class RolloutPublic(Schema):
    id: str
    state: str = Field(description="running, paused, completed, failed, aborted")
    image: str | None
    selector: dict[str, Any]
    max_unavailable: int
    max_failures: int
    failures: int
    message: str
    counts: dict[str, int] = Field(description="Members per state.")
    total: int
    progress: int = Field(description="Finished members, 0-100.")
    finished: bool
    created_by: str | None
    created_at: datetime
    finished_at: datetime | None
    members: list[RolloutMember]


class RolloutList(Schema):
    rollouts: list[RolloutPublic]


class ImagePin(Body):
    """Pin an image (drift only: nothing is recreated); null returns to the default."""

    image: ImageRef | None


class PlanImage(Schema):
    name: str
    image: str | None


class AgentImage(Schema):
    id: str
    image: str | None
