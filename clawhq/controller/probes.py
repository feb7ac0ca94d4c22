"""Health probes, kept apart from the agents' syncs: a slow agent never holds a sync worker.

Two cadences: while a start is under way (``startup``) probes begin after 20 ms and back off
to ``CLAWHQ_STARTUP_POLL_INTERVAL``; once running (``liveness``) every
``CLAWHQ_HEALTH_INTERVAL`` seconds with ±10% jitter. Each result is tagged with the start it
probed, so a result about an earlier container never counts, and is handed to the controller
by queueing the agent: the controller decides what a result means.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass

from clawhq.controller.clock import Clock
from clawhq.controller.health import Probe
from clawhq.controller.queue import WorkQueue
from clawhq.observability.metrics import Metrics
from clawhq.settings import Settings

log = logging.getLogger(__name__)

FIRST_POLL_SECONDS = 0.02


#: Where one container's health answers, or ``None`` while it has no address (not running).
Locate = Callable[[str, str], str | None]


@dataclass(frozen=True)
class Target:
    container_id: str
    attempt: int
    startup: bool


@dataclass(frozen=True)
class ProbeResult:
    """The latest probe of one start of one agent."""

    attempt: int
    healthy: bool
    failures: int  # failed probes in a row


class Prober:
    """Probes the agents it is told to track; tells the controller after each result."""

    def __init__(
        self,
        settings: Settings,
        probe: Probe,
        clock: Clock,
        on_result: Callable[[str], None],
        locate: Locate,
        metrics: Metrics | None = None,
    ) -> None:
        self._locate = locate
        self._metrics = metrics
        self._settings = settings
        self._probe = probe
        self._on_result = on_result
        self.queue: WorkQueue[str] = WorkQueue(clock)
        self._lock = threading.Lock()
        self._targets: dict[str, Target] = {}
        self._delays: dict[str, float] = {}
        self._results: dict[str, ProbeResult] = {}

    def set_probe(self, probe: Probe) -> None:
        self._probe = probe

    def track(self, agent_id: str, container_id: str, attempt: int, *, startup: bool) -> None:
        """Probe this start of the agent (a no-op when already tracked the same way)."""
        target = Target(container_id, attempt, startup)
        with self._lock:
            if self._targets.get(agent_id) == target:
                return
            self._targets[agent_id] = target
            if startup:
                first = min(FIRST_POLL_SECONDS, self._settings.startup_poll_interval)
                self._delays[agent_id] = first
            else:
                first = self._interval()
            previous = self._results.get(agent_id)
            if previous is not None and previous.attempt != attempt:
                del self._results[agent_id]
        self.queue.add(agent_id, first)

    def untrack(self, agent_id: str) -> None:
        with self._lock:
            self._targets.pop(agent_id, None)
            self._results.pop(agent_id, None)
            self._delays.pop(agent_id, None)

    def result(self, agent_id: str, attempt: int) -> ProbeResult | None:
        """The latest result for this start of the agent, if any."""
        with self._lock:
            found = self._results.get(agent_id)
        return found if found is not None and found.attempt == attempt else None

    def starting(self, agent_id: str) -> bool:
        """Whether a start of this agent is being followed here."""
        with self._lock:
            target = self._targets.get(agent_id)
        return target is not None and target.startup

    def tracked(self) -> dict[str, Target]:
        with self._lock:
            return dict(self._targets)

    def run(self, agent_id: str) -> None:
        """Probe one agent once (a probe worker calls this for each due key)."""
        with self._lock:
            target = self._targets.get(agent_id)
        if target is None:
            return
        url = self._locate(agent_id, target.container_id)
        healthy = url is not None and self._probe(url)
        with self._lock:
            if self._targets.get(agent_id) != target:
                return  # re-targeted or dropped meanwhile: this result is about nothing
            previous = self._results.get(agent_id)
            failures = 0 if healthy else (previous.failures if previous else 0) + 1
            self._results[agent_id] = ProbeResult(target.attempt, healthy, failures)
            if target.startup:
                delay = self._delays.get(agent_id, FIRST_POLL_SECONDS)
                self._delays[agent_id] = min(delay * 1.5, self._settings.startup_poll_interval)
                next_in = None if healthy else delay
            else:
                next_in = self._interval()
        if not healthy and not target.startup and self._metrics is not None:
            self._metrics.health_failures.inc()
        if next_in is not None:
            self.queue.add(agent_id, next_in)
        if healthy or not target.startup:
            self._on_result(agent_id)

    def _interval(self) -> float:
        return self._settings.health_interval * random.uniform(0.9, 1.1)  # jitter spreads load
