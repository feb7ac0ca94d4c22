"""The wait for a started container to answer healthy, on background threads.

Deploy and start return once the container runs; a waiter then polls the agent's health path,
fast at first and backing off to ``CLAWHQ_STARTUP_POLL_INTERVAL``, until it answers, the
container stops, or ``CLAWHQ_START_TIMEOUT`` passes. The outcome goes back to the orchestrator,
which owns every change of the agent's state.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from clawhq.errors import ClawHQError
from clawhq.observability import logs
from clawhq.runtime import Container

if TYPE_CHECKING:
    from clawhq.orchestrator.lifecycle import AgentOrchestrator, Attempt

log = logging.getLogger(__name__)

FIRST_POLL_SECONDS = 0.02


class StartWaiter:
    """Follows each start until the agent is healthy or has failed, one thread per start."""

    def __init__(self, orchestrator: AgentOrchestrator, workers: int) -> None:
        self._orchestrator = orchestrator
        self._settings = orchestrator.settings
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="clawhq-waiter")
        self._watching: dict[str, int] = {}
        self._lock = threading.Lock()
        self._closed = False

    def watch(self, attempt: Attempt) -> None:
        if self._closed:
            return
        with self._lock:
            self._watching[attempt.agent_id] = attempt.generation
        self._executor.submit(self._follow, attempt)

    def watched(self) -> set[str]:
        """Agents whose start is being followed."""
        with self._lock:
            return set(self._watching)

    def shutdown(self) -> None:
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _follow(self, attempt: Attempt) -> None:
        with logs.bound(agent_id=attempt.agent_id):
            try:
                reason, container = self._wait_for_health(attempt)
            except Exception:  # a waiter must never die without leaving the agent in a clear state
                log.exception("health waiter for agent %s failed", attempt.agent_id)
                reason, container = "internal error while waiting for the agent to start", None
            finally:
                with self._lock:
                    if self._watching.get(attempt.agent_id) == attempt.generation:
                        del self._watching[attempt.agent_id]
            if reason is None or self._closed:
                return
            if attempt.supervised:
                self._orchestrator.fail_restart(attempt, reason, container)
            else:
                self._orchestrator.fail_start(attempt, reason)

    def _wait_for_health(self, attempt: Attempt) -> tuple[str | None, Container | None]:
        """``(None, …)`` once healthy; otherwise why not, and the container as last seen."""
        orchestrator = self._orchestrator
        url = orchestrator.health_url(attempt.port)
        deadline = time.monotonic() + self._settings.start_timeout
        delay = min(FIRST_POLL_SECONDS, self._settings.startup_poll_interval)
        container: Container | None = None
        while not self._closed:
            if orchestrator.probe(url):
                orchestrator.mark_running(attempt)
                return None, container
            try:
                container = orchestrator.runtime.inspect(attempt.container_id)
            except ClawHQError as exc:
                if time.monotonic() >= deadline:
                    return f"lost track of the container while starting: {exc.message}", None
            else:
                if container is None or not container.is_running:
                    return orchestrator.describe_down(container), container
            if time.monotonic() >= deadline:
                reason = (
                    f"no healthy answer on {self._settings.agent_health_path} within "
                    f"{self._settings.start_timeout:g}s"
                )
                return reason + orchestrator.log_tail(attempt.container_id), container
            time.sleep(delay)
            delay = min(delay * 1.5, self._settings.startup_poll_interval)
        return None, container
