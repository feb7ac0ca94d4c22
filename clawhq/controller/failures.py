"""When a start does not work out: the agent's own failure (``ERROR`` for a start its owner
asked for, a backoff for the supervisor's), a crash, or the engine's (the start waits for it).

Also the record of the starts this process made (:class:`StartLog`), for the deploy-duration
metric and for telling a start followed here from one a ClawHQ that died began.
"""

from __future__ import annotations

import contextlib
import logging
import time

from sqlalchemy import select
from sqlalchemy.orm import Session

from clawhq.controller import transitions as t
from clawhq.controller.deps import ControllerDeps
from clawhq.controller.planner import Action, StartKind
from clawhq.db.models import Agent
from clawhq.errors import ClawHQError, EngineError, EngineUnavailable, ImageNotFound
from clawhq.runtime import Container
from clawhq.status import AgentStatus

log = logging.getLogger(__name__)

S = AgentStatus
LOG_TAIL_LINES = 5
#: Seconds between tries of a start the engine could not take (it was away or coming up).
ENGINE_RETRY_SECONDS = 3.0


def current_start(session: Session, agent_id: str, attempt: int) -> Agent | None:
    """The agent, locked, if ``attempt`` is still its latest start."""
    agent = session.scalars(
        select(Agent).where(Agent.id == agent_id).with_for_update()
    ).one_or_none()
    if agent is None or agent.start_generation != attempt:
        return None
    return agent


class StartLog:
    """The starts this process made: when each began and what kind it was."""

    def __init__(self, deps: ControllerDeps) -> None:
        self._deps = deps
        self._starts: dict[str, tuple[int, StartKind, float]] = {}

    def begin(self, agent: Agent, kind: StartKind) -> int:
        """A start of the agent begins (its row's transition); returns its attempt."""
        attempt = t.begin_start(agent, kind, self._deps.clock.now(), self._deps.timing)
        self._starts[agent.id] = (attempt, kind, time.monotonic())
        return attempt

    def follows(self, agent_id: str, attempt: int) -> bool:
        """Whether this process made that start of the agent."""
        found = self._starts.get(agent_id)
        return found is not None and found[0] == attempt

    def forget(self, agent_id: str) -> None:
        self._starts.pop(agent_id, None)

    def observe(self, agent_id: str, attempt: int, outcome: str) -> None:
        """The start ended (``running``, ``failed``): its duration goes to the metric."""
        found = self._starts.get(agent_id)
        if found is None or found[0] != attempt:
            kind, began = StartKind.RESUMED, time.monotonic()
        else:
            _, kind, began = found
        seconds = time.monotonic() - began
        self._deps.metrics.deploy_seconds.labels(kind.value, outcome).observe(seconds)


class Failures:
    def __init__(self, deps: ControllerDeps, starts: StartLog) -> None:
        self.deps = deps
        self.starts = starts

    def fail_now(self, session: Session, agent: Agent, kind: StartKind, reason: str) -> None:
        """In the caller's transaction: the start under way failed (see :meth:`failed`)."""
        now = self.deps.clock.now()
        if not (
            agent.status is S.DEPLOYING
            or (agent.status is S.RESTARTING and agent.next_restart_at is None)
        ):
            return  # no start under way any more: another process reported it first
        if kind is StartKind.RESTART:
            t.schedule_restart(agent, reason, now, self.deps.timing)
            return
        keep = agent.rollout_id is not None
        t.fail_start(agent, reason, now, keep_port=keep)
        if not keep:
            self.deps.ports.release(session, agent.id)
        self.starts.observe(agent.id, agent.start_generation, "failed")

    def engine_not_ready(self, exc: ClawHQError) -> bool:
        """Whether a start failed because of the engine, not the agent: it cannot be reached,
        or it came back moments ago and still fails what it will do shortly (its volume
        store loading, say). A missing image is the agent's, whenever it happens."""
        if isinstance(exc, ImageNotFound):
            return False
        if isinstance(exc, EngineUnavailable):
            return True
        return isinstance(exc, EngineError) and self.deps.observed.engine_settling()

    def defer(self, agent_id: str, attempt: int, kind: StartKind, exc: ClawHQError) -> None:
        """The start waits for the engine: tried again on the engine's schedule, without a
        restart counted, a backoff step or ``ERROR`` (the container, if any, is kept)."""
        p = self.deps
        log.warning(
            "agent %s: the container engine could not take its start (%s); again in %gs",
            agent_id,
            exc.message,
            ENGINE_RETRY_SECONDS,
        )
        with p.sessions.begin() as session:
            agent = current_start(session, agent_id, attempt)
            if agent is None:
                return  # superseded meanwhile
            t.defer_start(
                agent,
                f"waiting for the container engine: {exc.message}",
                p.clock.now(),
                ENGINE_RETRY_SECONDS,
                counted=kind is StartKind.RESTART,
            )

    def failed(
        self,
        agent_id: str,
        attempt: int,
        kind: StartKind,
        reason: str,
        container: Container | None,
    ) -> None:
        """A start failed: a supervised one waits for its next try, one the owner asked
        for is ``ERROR`` and leaves no container (and no port, unless a rollout rolls back)."""
        p = self.deps
        log.warning("agent %s failed to start: %s", agent_id, reason)
        with p.sessions() as session:
            agent = session.get(Agent, agent_id)
            if agent is None or agent.start_generation != attempt:
                return  # superseded: stopped, deleted or started again meanwhile
            supervised = agent.status is S.RESTARTING
        # Clean up first, so that whoever sees the failure also sees nothing left behind.
        if container is not None:
            try:
                if not supervised:
                    p.runtime.remove(container.id)
                elif container.is_running:
                    p.runtime.stop(container.id, p.settings.stop_timeout)
            except ClawHQError as exc:  # the next sync removes it once the engine is back
                log.error("could not clean up after agent %s: %s", agent_id, exc.message)
        with p.sessions.begin() as session:
            agent = current_start(session, agent_id, attempt)
            if agent is not None:
                self.fail_now(session, agent, StartKind.RESTART if supervised else kind, reason)

    def down(self, agent_id: str, attempt: int, action: Action, *, starting: bool) -> None:
        """The start failed or the agent crashed: say why, with its last log lines."""
        p = self.deps
        container = action.container
        if container is not None:  # a listing has no exit code: ask for the details
            with contextlib.suppress(ClawHQError):
                container = p.runtime.inspect(container.id) or container
        if action.timed_out:
            reason = (
                f"no healthy answer on {p.settings.agent_health_path} within "
                f"{p.settings.start_timeout:g}s"
            )
        elif container is None:
            reason = action.reason or "the agent's container disappeared"
        else:
            reason = container.describe_exit()
        if container is not None:
            reason += self._log_tail(container.id)
        if starting:
            self.failed(agent_id, attempt, StartKind.DEPLOY, reason, container)
            return
        with p.sessions.begin() as session:
            agent = current_start(session, agent_id, attempt)
            if agent is None or agent.status not in (
                S.RUNNING,
                S.UNHEALTHY,
                S.DEPLOYING,  # an abandoned start (see the planner)
                S.RESTARTING,
            ):
                return
            if agent.status is S.RESTARTING and agent.next_restart_at is not None:
                return  # already waiting out a backoff
            exit_code = container.exit_code if container is not None else None
            oom = container.oom_killed if container is not None else None
            delay = t.schedule_restart(
                agent, reason, p.clock.now(), p.timing, exit_code=exit_code, oom_killed=oom
            )
        log.warning("agent %s is down (%s); restart in %.0fs", agent_id, reason, delay)

    def _log_tail(self, container_id: str) -> str:
        try:
            tail = self.deps.runtime.logs(container_id, LOG_TAIL_LINES).strip()
        except ClawHQError:
            return ""
        return f"; last log lines: {tail}" if tail else ""
