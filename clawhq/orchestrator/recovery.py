"""Carrying out reconciliation actions and health-probe verdicts, one agent at a time.

Every handler takes the agent's lock, re-reads the agent and re-checks the engine before it
acts: the plan it came from may be stale, and another ClawHQ process may have acted first.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from clawhq.db import audit
from clawhq.db.models import Agent, PortLease
from clawhq.errors import ClawHQError
from clawhq.observability import logs
from clawhq.orchestrator.lifecycle import (
    AgentOrchestrator,
    Attempt,
    now,
    set_error,
    set_status,
)
from clawhq.orchestrator.reconcile import (
    STARTING,
    Action,
    ActionKind,
    AgentView,
    plan,
)
from clawhq.runtime import labels
from clawhq.status import AgentStatus, DesiredState

log = logging.getLogger(__name__)


def agent_view(agent: Agent, leased_port: int | None) -> AgentView:
    return AgentView(
        id=agent.id,
        status=agent.status,
        desired=agent.desired_state,
        container_id=agent.container_id,
        container_port=agent.container_port,
        next_restart_at=agent.next_restart_at,
        leased_port=leased_port,
        status_changed_at=agent.status_changed_at,
    )


class Recovery:
    """Applies :mod:`~clawhq.orchestrator.reconcile` actions and probe results."""

    def __init__(self, orchestrator: AgentOrchestrator) -> None:
        self.orchestrator = orchestrator
        self.runtime = orchestrator.runtime
        self.settings = orchestrator.settings
        self._failures: dict[str, int] = {}
        self._failures_lock = threading.Lock()
        self._handlers: dict[ActionKind, Callable[[Action], None]] = {
            ActionKind.REMOVE_CONTAINER: self._remove_container,
            ActionKind.ADOPT: self._adopt,
            ActionKind.WATCH: self._watch,
            ActionKind.CRASHED: self._crashed,
            ActionKind.RESTART: self._restart,
            ActionKind.STOP: self._stop,
            ActionKind.MARK_STOPPED: self._mark_stopped,
            ActionKind.FINISH_DELETE: lambda a: self.orchestrator.finish_delete(str(a.agent_id)),
            ActionKind.RELEASE_LEASE: self._release_lease,
            ActionKind.REPAIR_LEASE: self._repair_lease,
        }

    # -- planning -------------------------------------------------------------------------

    def plan_all(self) -> list[Action]:
        """Snapshot every agent and every managed container, and plan."""
        self.orchestrator.claim()
        containers = self.runtime.list_managed()
        with self.orchestrator.sessions() as session:
            rows = session.execute(select(PortLease.agent_id, PortLease.port)).all()
            leases = {agent_id: port for agent_id, port in rows}
            views = [agent_view(a, leases.get(a.id)) for a in session.scalars(select(Agent))]
        return plan(views, containers, now(), self.orchestrator.watched())

    def plan_one(self, agent_id: str) -> list[Action]:
        """Plan for one agent (after an engine event about it)."""
        self.orchestrator.claim()
        containers = self.runtime.list_managed({labels.AGENT_ID: agent_id})
        with self.orchestrator.sessions() as session:
            agent = session.get(Agent, agent_id)
            if agent is None:
                return plan([], containers, now())
            lease = session.scalar(select(PortLease.port).where(PortLease.agent_id == agent_id))
            view = agent_view(agent, lease)
        return plan([view], containers, now(), self.orchestrator.watched())

    def execute(self, action: Action) -> None:
        try:
            with logs.bound(agent_id=action.agent_id):
                self._handlers[action.kind](action)
        except (ClawHQError, SQLAlchemyError) as exc:
            log.warning("reconcile %s for agent %s failed: %s", action.kind, action.agent_id, exc)
        except Exception:
            log.exception("reconcile %s for agent %s failed", action.kind, action.agent_id)

    # -- probe verdicts -------------------------------------------------------------------

    def probe_passed(self, agent_id: str) -> None:
        with self._failures_lock:
            self._failures.pop(agent_id, None)
        orchestrator = self.orchestrator
        with orchestrator.locks.hold(agent_id), orchestrator.sessions.begin() as session:
            agent = orchestrator.find(session, agent_id)
            if agent is None or agent.desired_state is not DesiredState.RUNNING:
                return
            if agent.status is AgentStatus.UNHEALTHY:
                set_status(agent, AgentStatus.RUNNING)
                agent.next_restart_at = None
            if agent.status is not AgentStatus.RUNNING:
                return
            moment = now()
            agent.last_healthy_at = moment
            steady = timedelta(seconds=self.settings.restart_backoff_reset)
            if agent.backoff_step and moment - agent.status_changed_at >= steady:
                agent.backoff_step = 0  # healthy long enough: the next crash starts over

    def probe_failed(self, agent_id: str) -> None:
        self.orchestrator.metrics.health_failures.inc()
        with self._failures_lock:
            failures = self._failures[agent_id] = self._failures.get(agent_id, 0) + 1
        if failures < self.settings.health_failure_threshold:
            return
        orchestrator = self.orchestrator
        with orchestrator.locks.hold(agent_id), orchestrator.sessions.begin() as session:
            agent = orchestrator.find(session, agent_id)
            if agent is None or agent.status is not AgentStatus.RUNNING:
                return
            if agent.desired_state is not DesiredState.RUNNING:
                return
            delay = orchestrator.back_off(agent)
            set_status(agent, AgentStatus.UNHEALTHY)
            set_error(
                agent,
                f"failed {failures} health checks in a row on "
                f"{self.settings.agent_health_path}; restart in {delay:.0f}s unless it recovers",
            )

    # -- actions --------------------------------------------------------------------------

    def _audit(self, action: str, agent_id: str | None, detail: str = "") -> None:
        audit.append(
            self.orchestrator.sessions,
            actor="supervisor",
            action=action,
            agent_id=agent_id,
            detail=detail,
        )

    def _remove_container(self, action: Action) -> None:
        if action.agent_id is None:
            self.runtime.remove(str(action.container_id))
            self._audit("container.remove_stray", None, str(action.container_id)[:12])
            return
        with self.orchestrator.locks.hold(action.agent_id):
            with self.orchestrator.sessions() as session:
                agent = session.get(Agent, action.agent_id)
                if (
                    agent is not None
                    and agent.container_id == action.container_id
                    and (agent.status is not AgentStatus.ERROR)
                ):
                    return  # it became the agent's container meanwhile
            log.info("removing stray container %s", str(action.container_id)[:12])
            self.runtime.remove(str(action.container_id))
            self._audit("container.remove_stray", action.agent_id, str(action.container_id)[:12])

    def _adopt(self, action: Action) -> None:
        agent_id = str(action.agent_id)
        with self.orchestrator.locks.hold(agent_id), self.orchestrator.sessions.begin() as session:
            agent = self.orchestrator.find(session, agent_id)
            if agent is not None and agent.container_id is None:
                log.info(
                    "adopting container %s of agent %s", str(action.container_id)[:12], agent_id
                )
                agent.container_id = action.container_id

    def _watch(self, action: Action) -> None:
        agent_id = str(action.agent_id)
        with self.orchestrator.locks.hold(agent_id), self.orchestrator.sessions() as session:
            agent = session.get(Agent, agent_id)
            if (
                agent is None
                or agent.status not in STARTING
                or agent_id in self.orchestrator.watched()
            ):
                return
            attempt = Attempt(
                agent_id,
                str(action.container_id),
                agent.container_port,
                agent.start_generation,
                supervised=agent.status is AgentStatus.RESTARTING,
                kind="resumed",
            )
        self.orchestrator.watch(attempt)

    def _crashed(self, action: Action) -> None:
        agent_id = str(action.agent_id)
        orchestrator = self.orchestrator
        with orchestrator.locks.hold(agent_id):
            with orchestrator.sessions() as session:
                agent = session.get(Agent, agent_id)
                if agent is None or agent.desired_state is not DesiredState.RUNNING:
                    return
                if agent.status is AgentStatus.RESTARTING and agent.next_restart_at is not None:
                    return  # already waiting out a backoff
                container_id = agent.container_id
            if agent_id in orchestrator.watched():
                return  # a waiter follows this start and will report on it
            # Look again, now that nothing else can act on this agent: the plan may be stale.
            container = self.runtime.inspect(container_id) if container_id else None
            if container is not None and container.is_running:
                return
            orchestrator.schedule_restart(
                agent_id, orchestrator.describe_down(container), container
            )

    def _restart(self, action: Action) -> None:
        agent_id = str(action.agent_id)
        orchestrator = self.orchestrator
        with orchestrator.locks.hold(agent_id):
            with orchestrator.sessions.begin() as session:
                agent = orchestrator.find(session, agent_id)
                if (
                    agent is None
                    or agent.desired_state is not DesiredState.RUNNING
                    or agent.next_restart_at is None
                    or agent.next_restart_at > now()
                ):
                    return
                agent.next_restart_at = None
                agent.restart_count += 1
                agent.start_generation += 1
                orchestrator.metrics.restarts.inc()
                set_status(agent, AgentStatus.RESTARTING)
                container_id, port = agent.container_id, agent.container_port
                generation = agent.start_generation
            container = self.runtime.inspect(container_id) if container_id else None
            log.info("restarting agent %s", agent_id)
            self._audit("agent.restart" if container else "agent.recreate", agent_id)
            if container is None:
                orchestrator.deploy_supervised(agent_id)
                return
            try:
                if container.is_running:
                    self.runtime.stop(container.id, self.settings.stop_timeout)
                self.runtime.start(container.id)
            except ClawHQError as exc:
                orchestrator.schedule_restart(agent_id, f"restart failed: {exc.message}")
                return
            orchestrator.watch(
                Attempt(agent_id, container.id, port, generation, supervised=True, kind="restart")
            )

    def _stop(self, action: Action) -> None:
        agent_id = str(action.agent_id)
        with self.orchestrator.locks.hold(agent_id):
            with self.orchestrator.sessions() as session:
                agent = session.get(Agent, agent_id)
                if agent is None or agent.desired_state is DesiredState.RUNNING:
                    return
            self.runtime.stop(str(action.container_id), self.settings.stop_timeout)
            self.orchestrator.mark_stopped(agent_id)

    def _mark_stopped(self, action: Action) -> None:
        agent_id = str(action.agent_id)
        with self.orchestrator.locks.hold(agent_id):
            self.orchestrator.mark_stopped(agent_id)

    def _release_lease(self, action: Action) -> None:
        agent_id = str(action.agent_id)
        orchestrator = self.orchestrator
        with orchestrator.locks.hold(agent_id), orchestrator.sessions.begin() as session:
            agent = orchestrator.find(session, agent_id)
            if agent is None or agent.status in STARTING or agent.container_id is not None:
                return
            if agent.desired_state is DesiredState.RUNNING and agent.status in (
                AgentStatus.RUNNING,
                AgentStatus.UNHEALTHY,
            ):
                return
            orchestrator.ports.release(session, agent_id)
            agent.container_port = None

    def _repair_lease(self, action: Action) -> None:
        agent_id = str(action.agent_id)
        orchestrator = self.orchestrator
        with orchestrator.locks.hold(agent_id), orchestrator.sessions.begin() as session:
            agent = orchestrator.find(session, agent_id)
            if agent is None or action.port is None:
                return
            held = session.get(PortLease, action.port)
            if held is None and not session.scalar(
                select(PortLease.port).where(PortLease.agent_id == agent_id)
            ):
                session.add(PortLease(port=action.port, agent_id=agent_id))
                agent.container_port = action.port
