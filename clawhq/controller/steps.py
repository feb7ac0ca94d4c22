"""The actions of a plan, carried out: a transition in the planning transaction, then the
engine work outside it, whose outcome is written in a short transaction of its own.

``prepare`` runs inside the sync's locked transaction and returns the work to do afterwards
(None when the transition was all). Work checks, before writing, that the agent's latest
start is still the one it worked for: a start superseded meanwhile is left alone.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from clawhq.controller import handover
from clawhq.controller import transitions as t
from clawhq.controller.parts import Parts, plan_terms
from clawhq.controller.planner import Action, Do
from clawhq.controller.secrets import secrets_for
from clawhq.controller.spec import (
    container_name,
    secrets_file,
    summary,
    volume_name,
    with_attempt,
)
from clawhq.db import audit, history
from clawhq.db.models import Agent, PortLease
from clawhq.errors import ClawHQError, EngineError, EngineUnavailable, ImageNotFound
from clawhq.runtime import Container, ContainerSpec, labels
from clawhq.status import AgentStatus, DesiredState

log = logging.getLogger(__name__)

S = AgentStatus
Work = Callable[[], None]
LOG_TAIL_LINES = 5
#: Seconds between tries of a start the engine could not take (it was away or coming up).
ENGINE_RETRY_SECONDS = 3.0


class Steps:
    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        #: When each start began and what kind it was, for the deploy-duration metric.
        self._starts: dict[str, tuple[int, str, float]] = {}

    # -- in the planning transaction ------------------------------------------------------

    def prepare(self, session: Session, agent: Agent | None, action: Action) -> Work | None:
        p = self.parts
        now = p.clock.now()
        do = action.do
        if agent is None:  # a stray container: no row holds it
            return lambda: self._remove(action.agent_id, action.container, "container.remove_stray")
        if do is Do.CREATE:
            return self._prepare_create(session, agent, action.kind)
        if do is Do.START:
            if action.kind != "resumed":
                self._begin(agent, action.kind)
            attempt = agent.start_generation
            return lambda: self._start(agent.id, attempt, action.kind, action.container)
        if do is Do.RESTART:
            attempt = self._begin(agent, "restart")
            p.metrics.restarts.inc()
            return lambda: self._restart(agent.id, attempt, action.container)
        if do is Do.ADOPT and action.container is not None:
            log.info("adopting container %s of agent %s", action.container.id[:12], agent.id)
            t.adopt(agent, action.container.id)
        elif do is Do.REMOVE:
            return lambda: self._remove(agent.id, action.container, "container.remove_stray")
        elif do is Do.MARK_RUNNING:
            t.mark_running(agent, now)
            self._observe(agent.id, agent.start_generation, "running")
            log.info("agent %s is RUNNING", agent.id)
        elif do in (Do.FAIL_START, Do.CRASHED):
            attempt = agent.start_generation
            starting = do is Do.FAIL_START
            return lambda: self._down(agent.id, attempt, action, starting=starting)
        elif do is Do.UNHEALTHY:
            t.mark_unhealthy(agent, int(action.reason or 0), now, p.timing)
        elif do is Do.RECOVERED:
            t.mark_recovered(agent, now)
        elif do is Do.HEALTHY:
            t.mark_healthy(agent, now, p.timing)
        elif do is Do.STOP:
            t.begin_stop(agent, now)
            return lambda: self._stop(agent.id, action.container)
        elif do is Do.MARK_STOPPED:
            t.mark_stopped(agent, now)
        elif do is Do.FINISH_DELETE:
            return lambda: self._finish_delete(agent.id)
        elif do is Do.RELEASE_LEASE:
            p.ports.release(session, agent.id)
            t.release_port(agent)
        elif do is Do.REPAIR_LEASE and action.port is not None:
            held = session.get(PortLease, action.port)
            if held is None:
                session.add(PortLease(port=action.port, agent_id=agent.id))
                t.repair_port(agent, action.port)
        return None

    def follows(self, agent_id: str, attempt: int) -> bool:
        """Whether this process made that start of the agent."""
        found = self._starts.get(agent_id)
        return found is not None and found[0] == attempt

    def _begin(self, agent: Agent, kind: str) -> int:
        attempt = t.begin_start(agent, kind, self.parts.clock.now(), self.parts.timing)
        self._starts[agent.id] = (attempt, kind, time.monotonic())
        return attempt

    def _prepare_create(self, session: Session, agent: Agent, kind: str) -> Work | None:
        p = self.parts
        attempt = self._begin(agent, kind)
        try:
            p.require_firewall()
            terms = plan_terms(session, agent.user_id)
            disk = p.disk_of(session, agent, terms)
            secrets = secrets_for(session, agent, p.settings, p.keyring)
            port = p.ports.lease(session, agent.id)
        except ClawHQError as exc:
            reason = f"deploy failed: {exc.message}"
            self._fail_now(session, agent, kind, reason)
            raise_later = exc

            def report() -> None:
                raise raise_later

            return report
        identity = p.keyring.seal(secrets.proxy_identity, agent.proxy_identity_context)
        t.container_planned(agent, port, handover.token_hashes(secrets), identity)
        content = secrets_file(agent, secrets)
        image = p.image_of(agent, session, terms)
        spec = p.spec_for(agent, port, secrets, image, terms.egress, disk)
        session.flush()  # the status change enters the history before the steps that follow
        history.record(session, agent.id, "port_leased", f"host port {port}")
        spec = with_attempt(spec, attempt)
        return lambda: self._create(agent.id, agent.user_id, attempt, kind, spec, content)

    def _fail_now(self, session: Session, agent: Agent, kind: str, reason: str) -> None:
        now = self.parts.clock.now()
        if not (
            agent.status is S.DEPLOYING
            or (agent.status is S.RESTARTING and agent.next_restart_at is None)
        ):
            return  # no start under way any more: another process reported it first
        if kind == "restart":
            t.schedule_restart(agent, reason, now, self.parts.timing)
            return
        keep = agent.rollout_id is not None
        t.fail_start(agent, reason, now, keep_port=keep)
        if not keep:
            self.parts.ports.release(session, agent.id)
        self._observe(agent.id, agent.start_generation, "failed")

    # -- engine work ----------------------------------------------------------------------

    def _create(
        self,
        agent_id: str,
        user_id: str,
        attempt: int,
        kind: str,
        spec: ContainerSpec,
        secrets: bytes,
    ) -> None:
        p = self.parts
        if kind == "restart":
            self._audit("agent.recreate", agent_id)
        container: Container | None = None
        try:
            # Stopped gracefully first: a gateway killed outright keeps its lease on the
            # workspace, and the new container's gateway would refuse to start.
            self._remove_all(agent_id, user_id, graceful=True)
            container = p.runtime.create(spec)
            with p.sessions.begin() as session:
                agent = self._current(session, agent_id, attempt)
                if agent is None:
                    p.runtime.remove(container.id)  # superseded while it was being made
                    return
                config = summary(spec, getattr(container, "image_id", ""))
                t.container_created(agent, container.id, config, p.clock.now())
                history.record(session, agent_id, "container_created", container.id[:12])
            handover.hand_over(p.runtime, container, secrets)
            p.runtime.start(container.id)
            with p.sessions.begin() as session:
                history.record(
                    session, agent_id, "container_started", "waiting for a healthy answer"
                )
        except ClawHQError as exc:
            if self._engine_not_ready(exc):
                self._defer(agent_id, attempt, kind, exc)
                return
            self._failed(agent_id, attempt, kind, f"deploy failed: {exc.message}", container)
            raise

    def _start(self, agent_id: str, attempt: int, kind: str, container: Container | None) -> None:
        if container is None:
            return
        try:
            if self._hand_over(agent_id, attempt, container):
                self.parts.runtime.start(container.id)
        except ClawHQError as exc:
            if self._engine_not_ready(exc):
                self._defer(agent_id, attempt, kind, exc)
                return
            self._failed(agent_id, attempt, kind, f"start failed: {exc.message}", container)
            raise

    def _restart(self, agent_id: str, attempt: int, container: Container | None) -> None:
        if container is None:
            return
        log.info("restarting agent %s", agent_id)
        self._audit("agent.restart", agent_id)
        try:
            self.parts.require_firewall()
            if container.is_running:
                self.parts.runtime.stop(container.id, self.parts.settings.stop_timeout)
            if self._hand_over(agent_id, attempt, container):
                self.parts.runtime.start(container.id)
        except ClawHQError as exc:
            if self._engine_not_ready(exc):
                self._defer(agent_id, attempt, "restart", exc)
                return
            self._failed(agent_id, attempt, "restart", f"restart failed: {exc.message}", None)
            raise

    def _hand_over(self, agent_id: str, attempt: int, container: Container) -> bool:
        """New secrets for this start of an existing container, recorded and written into it
        (it is not running); False when the start was superseded meanwhile: no start then."""
        p = self.parts
        if not handover.takes_secrets_file(container):
            return True  # made by an earlier ClawHQ: its secrets are in its env, unchanged
        with p.sessions.begin() as session:
            agent = self._current(session, agent_id, attempt)
            if agent is None:
                return False
            content = handover.rotate(agent, p.keyring)
        handover.hand_over(p.runtime, container, content)
        return True

    def _engine_not_ready(self, exc: ClawHQError) -> bool:
        """Whether a start failed because of the engine, not the agent: it cannot be reached,
        or it came back moments ago and still fails what it will do shortly (its volume
        store loading, say). A missing image is the agent's, whenever it happens."""
        if isinstance(exc, ImageNotFound):
            return False
        if isinstance(exc, EngineUnavailable):
            return True
        return isinstance(exc, EngineError) and self.parts.observed.engine_settling()

    def _defer(self, agent_id: str, attempt: int, kind: str, exc: ClawHQError) -> None:
        """The start waits for the engine: tried again on the engine's schedule, without a
        restart counted, a backoff step or ``ERROR`` (the container, if any, is kept)."""
        p = self.parts
        log.warning(
            "agent %s: the container engine could not take its start (%s); again in %gs",
            agent_id,
            exc.message,
            ENGINE_RETRY_SECONDS,
        )
        with p.sessions.begin() as session:
            agent = self._current(session, agent_id, attempt)
            if agent is None:
                return  # superseded meanwhile
            t.defer_start(
                agent,
                f"waiting for the container engine: {exc.message}",
                p.clock.now(),
                ENGINE_RETRY_SECONDS,
                counted=kind == "restart",
            )

    def _failed(
        self, agent_id: str, attempt: int, kind: str, reason: str, container: Container | None
    ) -> None:
        """A start failed: a supervised one waits for its next try, one the owner asked
        for is ``ERROR`` and leaves no container (and no port, unless a rollout rolls back)."""
        p = self.parts
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
            agent = self._current(session, agent_id, attempt)
            if agent is not None:
                self._fail_now(session, agent, "restart" if supervised else kind, reason)

    def _down(self, agent_id: str, attempt: int, action: Action, *, starting: bool) -> None:
        """The start failed or the agent crashed: say why, with its last log lines."""
        p = self.parts
        container = action.container
        if container is not None:  # a listing has no exit code: ask for the details
            with contextlib.suppress(ClawHQError):
                container = p.runtime.inspect(container.id) or container
        if action.reason == "timeout":
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
            self._failed(agent_id, attempt, "deploy", reason, container)
            return
        with p.sessions.begin() as session:
            agent = self._current(session, agent_id, attempt)
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

    def _stop(self, agent_id: str, container: Container | None) -> None:
        p = self.parts
        if container is not None:
            p.runtime.stop(container.id, p.settings.stop_timeout)
        with p.sessions.begin() as session:
            agent = session.get(Agent, agent_id, with_for_update=True)
            if agent is not None and agent.desired_state is DesiredState.STOPPED:
                t.mark_stopped(agent, p.clock.now())

    def _finish_delete(self, agent_id: str) -> None:
        p = self.parts
        with p.sessions() as session:
            agent = session.get(Agent, agent_id)
            if agent is None or agent.desired_state is not DesiredState.DELETED:
                return
            user_id, container_id = agent.user_id, agent.container_id
            keep_workspace = agent.keep_workspace
        if keep_workspace and container_id:
            p.runtime.stop(container_id, p.settings.stop_timeout)  # let it flush
        self._remove_all(agent_id, user_id, container_id)
        if not keep_workspace:
            p.runtime.remove_volume(volume_name(agent_id))
        with p.sessions.begin() as session:
            p.ports.release(session, agent_id)
            agent = session.get(Agent, agent_id, with_for_update=True)
            if agent is not None:
                session.delete(agent)
        p.observed.forget(agent_id)
        self._starts.pop(agent_id, None)
        if p.prober is not None:
            p.prober.untrack(agent_id)

    def remove_stray(self, action: Action) -> None:
        self._remove(action.agent_id, action.container, "container.remove_stray")

    def _remove(self, agent_id: str | None, container: Container | None, what: str) -> None:
        if container is None:
            return
        log.info("removing container %s", container.id[:12])
        if self.parts.runtime.remove(container.id):
            self._audit(what, agent_id, container.id[:12])

    def _remove_all(
        self,
        agent_id: str,
        user_id: str,
        container_id: str | None = None,
        *,
        graceful: bool = False,
    ) -> None:
        """Remove the agent's containers: the recorded one, by name, and any labelled one."""
        runtime = self.parts.runtime
        found = runtime.list_managed({labels.AGENT_ID: agent_id})
        if graceful:
            for container in found:
                if container.is_running:
                    runtime.stop(container.id, self.parts.settings.stop_timeout)
        refs = {container_id, container_name(user_id, agent_id)} | {c.id for c in found}
        for ref in refs - {None}:
            runtime.remove(str(ref))

    # -- helpers --------------------------------------------------------------------------

    @staticmethod
    def _current(session: Session, agent_id: str, attempt: int) -> Agent | None:
        """The agent, locked, if ``attempt`` is still its latest start."""
        agent = session.scalars(
            select(Agent).where(Agent.id == agent_id).with_for_update()
        ).one_or_none()
        if agent is None or agent.start_generation != attempt:
            return None
        return agent

    def _log_tail(self, container_id: str) -> str:
        try:
            tail = self.parts.runtime.logs(container_id, LOG_TAIL_LINES).strip()
        except ClawHQError:
            return ""
        return f"; last log lines: {tail}" if tail else ""

    def _observe(self, agent_id: str, attempt: int, outcome: str) -> None:
        found = self._starts.get(agent_id)
        if found is None or found[0] != attempt:
            kind, began = "resumed", time.monotonic()
        else:
            _, kind, began = found
        self.parts.metrics.deploy_seconds.labels(kind, outcome).observe(time.monotonic() - began)

    def _audit(self, action: str, agent_id: str | None, detail: str = "") -> None:
        audit.append(
            self.parts.sessions,
            actor="supervisor",
            action=action,
            agent_id=agent_id,
            detail=detail,
        )
