"""The supervisor: notices crashes within a second, probes health, restarts with backoff, and
reconciles the engine with the database at start-up and periodically.

Three threads: one follows the engine's event stream (``die``, ``oom``, ``destroy``) and
re-plans the agent concerned; one ticks every second to start due restarts and due health
probes; reconciliation of everything runs at start, after the event stream reconnects, and
every ``CLAWHQ_RECONCILE_INTERVAL``. Work runs in a small pool; per-agent locks serialize it.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from clawhq.db.models import Agent
from clawhq.errors import ClawHQError
from clawhq.orchestrator.lifecycle import AgentOrchestrator, now
from clawhq.orchestrator.reconcile import Action, ActionKind
from clawhq.orchestrator.recovery import Recovery
from clawhq.status import AgentStatus, DesiredState

log = logging.getLogger(__name__)

WATCHED_EVENTS = frozenset({"die", "oom", "destroy"})
SETTLE_TRIES = 5
SETTLE_SECONDS = 0.2
TICK_SECONDS = 1.0
MAX_EVENT_BACKOFF = 30.0


class Supervisor:
    """Keeps agents that should run, running. Owned by the application's lifespan."""

    def __init__(self, orchestrator: AgentOrchestrator, workers: int = 8) -> None:
        self.orchestrator = orchestrator
        self.recovery = Recovery(orchestrator)
        self.settings = orchestrator.settings
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="clawhq-supervisor")
        self._threads: list[threading.Thread] = []
        self._next_probe: dict[str, float] = {}
        self._probing: set[str] = set()
        self._probing_lock = threading.Lock()
        self._last_reconcile = 0.0

    def start(self) -> None:
        for name, target in (("events", self._follow_events), ("ticks", self._tick_loop)):
            thread = threading.Thread(target=target, name=f"clawhq-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            if thread.name != "clawhq-events":  # blocked on the engine's stream; daemon
                thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- reconciliation -------------------------------------------------------------------

    def reconcile(self) -> list[Action]:
        """Plan for every agent and carry the plan out; returns what was planned."""
        self._last_reconcile = time.monotonic()
        try:
            actions = self.recovery.plan_all()
        except (ClawHQError, SQLAlchemyError) as exc:
            log.warning("reconcile skipped: %s", exc)
            return []
        except Exception:  # never let one bad pass stop supervision
            log.exception("reconcile failed")
            return []
        if actions:
            log.info("reconcile: %s", ", ".join(f"{a.kind}({a.agent_id})" for a in actions))
        for action in actions:
            self.recovery.execute(action)
        return actions

    def check(self, agent_id: str, settle: bool = False) -> None:
        """Re-plan one agent, after the engine told us something happened to it.

        With ``settle``, an empty plan is tried again a few times: the engine sends ``die``
        before its own view of the container says it stopped.
        """
        try:
            for attempt in range(SETTLE_TRIES if settle else 1):
                actions = self.recovery.plan_one(agent_id)
                if actions:
                    break
                if attempt + 1 < SETTLE_TRIES and settle:
                    self._stop.wait(SETTLE_SECONDS)
            for action in actions:
                self.recovery.execute(action)
        except (ClawHQError, SQLAlchemyError) as exc:
            log.warning("check of agent %s failed: %s", agent_id, exc)
        except Exception:
            log.exception("check of agent %s failed", agent_id)

    # -- the event stream -----------------------------------------------------------------

    def _follow_events(self) -> None:
        since: datetime | None = None
        delay = 1.0
        first = True
        while not self._stop.is_set():
            try:
                stream = self.orchestrator.runtime.events(since=since or datetime.now(UTC))
                if not first:
                    self._pool.submit(self.reconcile)  # catch up on what the gap hid
                first = False
                for event in stream:
                    if self._stop.is_set():
                        return
                    since = event.time
                    agent_id = event.labels.get("clawhq.agent-id")
                    if agent_id and event.action in WATCHED_EVENTS:
                        self._pool.submit(self.check, agent_id, True)
                    delay = 1.0
                raise ClawHQError("the engine closed its event stream")
            except ClawHQError as exc:
                if self._stop.is_set():
                    return
                log.warning("engine events: %s; reconnecting in %.0fs", exc.message, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, MAX_EVENT_BACKOFF)
                first = False

    # -- ticks: due restarts, due probes, periodic reconcile ------------------------------

    def _tick_loop(self) -> None:
        self.reconcile()
        while not self._stop.wait(TICK_SECONDS):
            try:
                self.tick()
            except Exception:  # the supervisor must outlive any single failure
                log.exception("supervisor tick failed")

    def tick(self) -> None:
        if time.monotonic() - self._last_reconcile >= self.settings.reconcile_interval:
            self._pool.submit(self.reconcile)
        try:
            with self.orchestrator.sessions() as session:
                rows = session.execute(
                    select(Agent.id, Agent.status, Agent.container_port, Agent.next_restart_at)
                    .where(Agent.desired_state == DesiredState.RUNNING)
                    .where(
                        Agent.status.in_(
                            [AgentStatus.RUNNING, AgentStatus.UNHEALTHY, AgentStatus.RESTARTING]
                        )
                    )
                ).all()
        except SQLAlchemyError as exc:
            log.warning("supervisor cannot read the database: %s", type(exc).__name__)
            return
        moment, clock = now(), time.monotonic()
        live = set()
        for agent_id, status, port, next_restart_at in rows:
            if next_restart_at is not None and next_restart_at <= moment:
                self._pool.submit(
                    self.recovery.execute, Action(ActionKind.RESTART, agent_id=agent_id)
                )
            if status in (AgentStatus.RUNNING, AgentStatus.UNHEALTHY) and port:
                live.add(agent_id)
                due = self._next_probe.setdefault(agent_id, clock + self._interval())
                if due <= clock:
                    self._next_probe[agent_id] = clock + self._interval()
                    self._submit_probe(agent_id, port)
        for gone in set(self._next_probe) - live:
            del self._next_probe[gone]

    def _interval(self) -> float:
        return self.settings.health_interval * random.uniform(0.9, 1.1)  # jitter spreads load

    def _submit_probe(self, agent_id: str, port: int) -> None:
        with self._probing_lock:
            if agent_id in self._probing:
                return
            self._probing.add(agent_id)
        self._pool.submit(self._probe, agent_id, port)

    def _probe(self, agent_id: str, port: int) -> None:
        try:
            healthy = self.orchestrator.probe(self.orchestrator.health_url(port))
            if healthy:
                self.recovery.probe_passed(agent_id)
            else:
                self.recovery.probe_failed(agent_id)
        except (ClawHQError, SQLAlchemyError) as exc:
            log.warning("health probe of agent %s: %s", agent_id, exc)
        finally:
            with self._probing_lock:
                self._probing.discard(agent_id)
