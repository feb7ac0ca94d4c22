"""What the controller's pieces share: settings, database, engine, caches, clock, metrics."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from clawhq.controller.clock import Clock
from clawhq.controller.observed import ObservedState
from clawhq.controller.planner import Rules
from clawhq.controller.ports import PortPool
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
from clawhq.controller.transitions import Timing
from clawhq.crypto import Keyring
from clawhq.db.models import Agent, Plan, User
from clawhq.errors import Unavailable
from clawhq.observability.metrics import Metrics
from clawhq.runtime import ContainerSpec, Runtime
from clawhq.settings import Settings

if TYPE_CHECKING:
    from clawhq.controller.probes import Prober

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


@dataclass
class Parts:
    settings: Settings
    sessions: sessionmaker[Session]
    read_sessions: sessionmaker[Session]
    runtime: Runtime
    keyring: Keyring
    clock: Clock
    metrics: Metrics
    instance_id: str
    observed: ObservedState = field(init=False)
    webhook_base_url: str | None = None
    #: The agent network's gateway: where ClawHQ's connections to agents come from.
    proxy_address: str = ""
    #: The egress network's gateway (agents whose plan restricts egress live there).
    egress_gateway: str = ""
    prober: Prober | None = None
    #: Whether the agent network is known to exist (``Controller.prepare``).
    prepared: bool = False
    #: Whether this process restarts and probes agents on its own (``CLAWHQ_SUPERVISE``).
    supervise: bool = True
    #: The agent firewall as ``clawhq serve`` left it: ``installed``, ``off`` (the operator
    #: said so), ``not installed`` (it failed), ``unknown`` (nobody tried: not ``serve``).
    firewall: str = "unknown"
    #: Installs the agent firewall rules; True when they are in place (``clawhq serve`` sets it,
    #: so the rules go in as soon as the engine answers, at start or later).
    firewall_installer: Callable[[], bool] | None = None
    #: The egress forward proxy as ``clawhq serve``'s lifespan left it: ``listening``,
    #: ``not listening: <why>``, ``unknown`` (nobody tried: not ``serve``). See readiness.py.
    egress_proxy: str = "unknown"

    def __post_init__(self) -> None:
        self.observed = ObservedState(self.clock.monotonic)
        self.ports = PortPool(self.settings.port_range, str(self.settings.agent_bind_ip))
        hours = self.settings.stopped_lease_hours
        self.rules = Rules(
            failure_threshold=self.settings.health_failure_threshold,
            lease_release_after=timedelta(hours=hours) if hours else None,
        )
        s = self.settings
        self.timing = Timing(
            start_timeout=s.start_timeout,
            backoff_initial=s.restart_backoff_initial,
            backoff_max=s.restart_backoff_max,
            backoff_reset=s.restart_backoff_reset,
            health_path=s.agent_health_path,
        )
        self._intended = lru_cache(maxsize=4096)(self._intended_uncached)
        self._disk_warned = False

    def prepare(self) -> str:
        """Make sure the agent network exists; return its gateway address on the host.

        Agents post webhooks to that gateway unless ``CLAWHQ_WEBHOOK_BASE_URL`` says otherwise.
        """
        gateway = self.runtime.ensure_network(self.settings.agent_network)
        self.proxy_address = gateway
        self.egress_gateway = self.runtime.ensure_network(self.settings.egress_network)
        if self.webhook_base_url is None:
            self.webhook_base_url = f"http://{gateway}:{self.settings.port}"
        if self.firewall_installer is not None and self.firewall not in ("installed", "off"):
            self.firewall = "installed" if self.firewall_installer() else "not installed"
        self.prepared = True
        return gateway

    def firewall_allows_agents(self) -> bool:
        """In production agents start only behind ClawHQ's firewall rules, unless the
        operator turned them off explicitly (``CLAWHQ_FIREWALL=off``): it fails closed."""
        if self.settings.env != "production" or self.settings.firewall == "off":
            return True
        return self.firewall == "installed"

    def require_firewall(self) -> None:
        if not self.firewall_allows_agents():
            raise Unavailable(
                f"the agent firewall is {self.firewall} and CLAWHQ_ENV=production starts no agent "
                "without it: run `clawhq serve` as root so it installs the rules (see `clawhq "
                "network status`), or set CLAWHQ_FIREWALL=off to run without them on purpose",
                code="firewall_not_ready",
            )

    def gateway_url(self, agent_id: str, container_id: str | None) -> str | None:
        """The agent's gateway, at its container's address on the agent network (``None``
        while the container has no address: it is not running)."""
        container = self.observed.container(agent_id, container_id)
        if container is None or not container.address:
            return None
        return f"http://{container.address}:{self.settings.agent_internal_port}"

    def health_url(self, agent_id: str, container_id: str) -> str | None:
        """Where ClawHQ probes an agent: its gateway's health path."""
        base = self.gateway_url(agent_id, container_id)
        return None if base is None else f"{base}{self.settings.agent_health_path}"

    @property
    def placement(self) -> Placement:
        return Placement(
            self.webhook_base_url or "", self.instance_id, self.proxy_address, self.egress_gateway
        )

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
            self.settings,
            agent,
            port or 0,
            secrets,
            self.placement,
            image=image,
            egress=egress,
            disk=disk,
        )

    def disk_of(self, session: Session, agent: Agent, terms: PlanTerms | None = None) -> int | None:
        """The cap of the agent's workspace (its plan's, else ``CLAWHQ_AGENT_DISK``), or
        ``None`` for a plain volume: none is set, or (outside production only, with a
        warning) the host cannot make capped disks. In production that fails closed."""
        terms = terms or plan_terms(session, agent.user_id)
        size = agent_disk(self.settings, terms.disk)
        problem = self.runtime.disk_support() if size is not None else None
        if problem is None:
            return size
        if self.settings.env == "production":
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
        return agent_image(self.settings, agent.image, terms.image)

    def intended_summary(
        self, session: Session, agent: Agent, image: str | None = None
    ) -> dict[str, Any]:
        """The agent's spec as plain data (no secrets), with ``image`` or its own."""
        terms = plan_terms(session, agent.user_id)
        image = image or self.image_of(agent, session, terms)
        spec = self.spec_for(agent, agent.container_port, image=image, egress=terms.egress)
        return summary(spec, self.observed.image_id(image))

    def intended_hash(
        self, agent: AgentFields, port: int | None, image: str, egress: str = "open"
    ) -> str:
        """The config hash of the container the agent should have (cached: it is pure)."""
        channels = tuple(agent.channels or ())
        key = (agent.id, agent.user_id, agent.name, agent.model_provider, agent.model, channels)
        return self._intended(key, port or 0, image, self.placement, egress)

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
            self.settings, record, port, NO_SECRETS, placement, image=image, egress=egress
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
