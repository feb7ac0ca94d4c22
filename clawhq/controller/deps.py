"""What the controller's pieces are built with: fixed when ClawHQ is wired, never changed.

The one mutable part is :class:`~clawhq.controller.host.HostState` (what this process learns
about its host), held here by reference; each consumer outside the controller gets only the
narrow piece it needs (:class:`~clawhq.controller.gateways.Gateways` for the agent proxy, say).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from clawhq.controller.clock import Clock
from clawhq.controller.host import HostState
from clawhq.controller.networks import AgentNetworks
from clawhq.controller.observed import ObservedState
from clawhq.controller.planner import Rules
from clawhq.controller.ports import PortPool
from clawhq.controller.specs import AgentSpecs
from clawhq.controller.transitions import Timing
from clawhq.crypto import Keyring
from clawhq.observability.metrics import Metrics
from clawhq.runtime import Runtime
from clawhq.settings import Settings


@dataclass(frozen=True)
class ControllerDeps:
    settings: Settings
    sessions: sessionmaker[Session]
    read_sessions: sessionmaker[Session]
    runtime: Runtime
    keyring: Keyring
    clock: Clock
    metrics: Metrics
    instance_id: str
    observed: ObservedState
    host: HostState
    networks: AgentNetworks
    specs: AgentSpecs
    ports: PortPool
    rules: Rules
    timing: Timing

    @property
    def supervise(self) -> bool:
        """Whether this process restarts and probes agents on its own (``CLAWHQ_SUPERVISE``)."""
        return self.settings.supervise


def rules_of(settings: Settings) -> Rules:
    hours = settings.stopped_lease_hours
    return Rules(
        failure_threshold=settings.health_failure_threshold,
        lease_release_after=timedelta(hours=hours) if hours else None,
    )


def timing_of(settings: Settings) -> Timing:
    return Timing(
        start_timeout=settings.start_timeout,
        backoff_initial=settings.restart_backoff_initial,
        backoff_max=settings.restart_backoff_max,
        backoff_reset=settings.restart_backoff_reset,
        health_path=settings.agent_health_path,
    )
