"""The container each agent should have now: its plan's terms, its spec, its config hash.

:mod:`.spec` builds a spec (pure); this adds what it is built from at run time — the owner's
plan, where this ClawHQ places agents, whether capped disks can be made — for the sync, the
rollouts and the API's drift report.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from clawhq.controller.observed import ObservedState
from clawhq.controller.spec import (
    NO_SECRETS,
    AgentFields,
    AgentSecrets,
    Placement,
    agent_disk,
    agent_image,
    build_spec,
    summary,
)
from clawhq.db.models import Agent, Plan, User
from clawhq.errors import Unavailable
from clawhq.runtime import ContainerSpec, Runtime
from clawhq.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlanTerms:
    """What the agent owner's plan sets for the agent's container (read in one query)."""

    image: str | None = None
    egress: str = "open"
    #: The plan's workspace size in bytes; ``None``: ``CLAWHQ_AGENT_DISK`` applies.
    disk: int | None = None


def plan_terms(session: Session, user_id: str) -> PlanTerms:
    """The plan terms of the user's agents (the defaults when the user has no plan row)."""
    query = select(Plan.image, Plan.egress_policy, Plan.agent_disk).join(
        User, User.plan_name == Plan.name
    )
    row = session.execute(query.where(User.id == user_id)).one_or_none()
    if row is None:
        return PlanTerms()
    return PlanTerms(image=row.image, egress=row.egress_policy or "open", disk=row.agent_disk)


class AgentSpecs:
    def __init__(
        self,
        settings: Settings,
        runtime: Runtime,
        observed: ObservedState,
        placement: Callable[[], Placement],
    ) -> None:
        self._settings = settings
        self._runtime = runtime
        self._observed = observed
        self._placement = placement
        self._intended = lru_cache(maxsize=4096)(self._intended_uncached)
        self._disk_warned = False

    def spec_for(
        self,
        agent: AgentFields,
        port: int | None,
        secrets: AgentSecrets = NO_SECRETS,
        image: str | None = None,
        egress: str = "open",
        disk: int | None = None,
    ) -> ContainerSpec:
        """The agent's container as this ClawHQ would create it now (``disk``: its
        workspace's cap, from :meth:`disk_of`)."""
        return build_spec(
            self._settings,
            agent,
            port or 0,
            secrets,
            self._placement(),
            image=image,
            egress=egress,
            disk=disk,
        )

    def disk_of(self, session: Session, agent: Agent, terms: PlanTerms | None = None) -> int | None:
        """The cap of the agent's workspace (its plan's, else ``CLAWHQ_AGENT_DISK``), or
        ``None`` for a plain volume: none is set, or (outside production only, with a
        warning) the host cannot make capped disks. In production that fails closed."""
        terms = terms or plan_terms(session, agent.user_id)
        size = agent_disk(self._settings, terms.disk)
        problem = self._runtime.disk_support() if size is not None else None
        if problem is None:
            return size
        if self._settings.env == "production":
            raise Unavailable(
                f"workspaces cannot be capped on this host ({problem}) and CLAWHQ_ENV=production "
                "starts no agent without a cap: see docs/disks.md, or set CLAWHQ_AGENT_DISK=off "
                "(and no plan size) to run without caps on purpose",
                code="disk_quota_unavailable",
            )
        if not self._disk_warned:
            self._disk_warned = True
            log.warning(
                "workspaces get no disk cap: %s; agents share the host's disk (docs/disks.md)",
                problem,
            )
        return None

    def image_of(self, agent: Agent, session: Session, terms: PlanTerms | None = None) -> str:
        terms = terms or plan_terms(session, agent.user_id)
        return agent_image(self._settings, agent.image, terms.image)

    def intended_summary(
        self, session: Session, agent: Agent, image: str | None = None
    ) -> dict[str, Any]:
        """The agent's spec as plain data (no secrets), with ``image`` or its own."""
        terms = plan_terms(session, agent.user_id)
        image = image or self.image_of(agent, session, terms)
        spec = self.spec_for(agent, agent.container_port, image=image, egress=terms.egress)
        return summary(spec, self._observed.image_id(image))

    def intended_hash(
        self, agent: AgentFields, port: int | None, image: str, egress: str = "open"
    ) -> str:
        """The config hash of the container the agent should have (cached: it is pure)."""
        channels = tuple(agent.channels or ())
        key = (agent.id, agent.user_id, agent.name, agent.model_provider, agent.model, channels)
        return self._intended(key, port or 0, image, self._placement(), egress)

    def _intended_uncached(
        self,
        key: tuple[str, str, str, str, str, tuple[str, ...]],
        port: int,
        image: str,
        placement: Placement,
        egress: str,
    ) -> str:
        agent_id, user_id, name, provider, model, channels = key
        record = _Record(agent_id, user_id, name, provider, model, list(channels))
        spec = build_spec(
            self._settings, record, port, NO_SECRETS, placement, image=image, egress=egress
        )
        return spec.config_hash()


@dataclass(frozen=True)
class _Record:
    id: str
    user_id: str
    name: str
    model_provider: str
    model: str
    channels: list[str]
