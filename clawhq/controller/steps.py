"""The actions of a plan, carried out: a transition in the planning transaction, then the
engine work outside it, whose outcome is written in a short transaction of its own.

``prepare`` runs inside the sync's locked transaction and returns the work to do afterwards
(None when the transition was all). Work checks, before writing, that the agent's latest
start is still the one it worked for: a start superseded meanwhile is left alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy.orm import Session

from clawhq.controller import handover
from clawhq.controller import transitions as t
from clawhq.controller.deps import ControllerDeps
from clawhq.controller.failures import Failures, StartLog, current_start
from clawhq.controller.planner import Action, Do, StartKind
from clawhq.controller.probes import Prober
from clawhq.controller.secrets import secrets_for
from clawhq.controller.spec import (
    container_name,
    secrets_file,
    summary,
    volume_name,
    with_attempt,
)
from clawhq.controller.specs import plan_terms
from clawhq.db import audit, history
from clawhq.db.models import Agent, PortLease
from clawhq.errors import ClawHQError
from clawhq.runtime import Container, ContainerSpec, labels
from clawhq.status import AgentStatus, DesiredState

log = logging.getLogger(__name__)

S = AgentStatus
Work = Callable[[], None]


class Steps:
    def __init__(self, deps: ControllerDeps, prober: Prober) -> None:
        self.deps = deps
        self.prober = prober
        self.starts = StartLog(deps)
        self.failures = Failures(deps, self.starts)

    def follows(self, agent_id: str, attempt: int) -> bool:
        """Whether this process made that start of the agent."""
        return self.starts.follows(agent_id, attempt)

    # -- in the planning transaction ------------------------------------------------------

    def prepare(self, session: Session, agent: Agent | None, action: Action) -> Work | None:
        p = self.deps
        now = p.clock.now()
        do = action.do
        if agent is None:  # a stray container: no row holds it
            return lambda: self._remove(action.agent_id, action.container, "container.remove_stray")
        if do is Do.CREATE:
            return self._prepare_create(session, agent, action.kind or StartKind.DEPLOY)
        if do is Do.START:
            kind = action.kind or StartKind.START
            if kind is not StartKind.RESUMED:
                self.starts.begin(agent, kind)
            attempt = agent.start_generation
            return lambda: self._start(agent.id, attempt, kind, action.container)
        if do is Do.RESTART:
            attempt = self.starts.begin(agent, StartKind.RESTART)
            p.metrics.restarts.inc()
            return lambda: self._restart(agent.id, attempt, action.container)
        if do is Do.ADOPT and action.container is not None:
            log.info("adopting container %s of agent %s", action.container.id[:12], agent.id)
            t.adopt(agent, action.container.id)
        elif do is Do.REMOVE:
            return lambda: self._remove(agent.id, action.container, "container.remove_stray")
        elif do is Do.MARK_RUNNING:
            t.mark_running(agent, now)
            self.starts.observe(agent.id, agent.start_generation, "running")
            log.info("agent %s is RUNNING", agent.id)
        elif do in (Do.FAIL_START, Do.CRASHED):
            attempt = agent.start_generation
            starting = do is Do.FAIL_START
            return lambda: self.failures.down(agent.id, attempt, action, starting=starting)
        elif do is Do.UNHEALTHY:
            t.mark_unhealthy(agent, action.failures, now, p.timing)
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

    def _prepare_create(self, session: Session, agent: Agent, kind: StartKind) -> Work | None:
        p = self.deps
        attempt = self.starts.begin(agent, kind)
        try:
            p.networks.require_firewall()
            terms = plan_terms(session, agent.user_id)
            disk = p.specs.disk_of(session, agent, terms)
            secrets = secrets_for(session, agent, p.settings, p.keyring)
            port = p.ports.lease(session, agent.id)
        except ClawHQError as exc:
            reason = f"deploy failed: {exc.message}"
            self.failures.fail_now(session, agent, kind, reason)
            raise_later = exc

            def report() -> None:
                raise raise_later

            return report
        identity = p.keyring.seal(secrets.proxy_identity, agent.proxy_identity_context)
        t.container_planned(agent, port, handover.token_hashes(secrets), identity)
        content = secrets_file(agent, secrets)
        image = p.specs.image_of(agent, session, terms)
        spec = p.specs.spec_for(agent, port, secrets, image, terms.egress, disk)
        session.flush()  # the status change enters the history before the steps that follow
        history.record(session, agent.id, "port_leased", f"host port {port}")
        spec = with_attempt(spec, attempt)
        return lambda: self._create(agent.id, agent.user_id, attempt, kind, spec, content)

    # -- engine work ----------------------------------------------------------------------

    def _create(
        self,
        agent_id: str,
        user_id: str,
        attempt: int,
        kind: StartKind,
        spec: ContainerSpec,
        secrets: bytes,
    ) -> None:
        p = self.deps
        if kind is StartKind.RESTART:
            self._audit("agent.recreate", agent_id)
        container: Container | None = None
        try:
            # Stopped gracefully first: a gateway killed outright keeps its lease on the
            # workspace, and the new container's gateway would refuse to start.
            self._remove_all(agent_id, user_id, graceful=True)
            container = p.runtime.create(spec)
            with p.sessions.begin() as session:
                agent = current_start(session, agent_id, attempt)
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
            if self.failures.engine_not_ready(exc):
                self.failures.defer(agent_id, attempt, kind, exc)
                return
            reason = f"deploy failed: {exc.message}"
            self.failures.failed(agent_id, attempt, kind, reason, container)
            raise

    def _start(
        self, agent_id: str, attempt: int, kind: StartKind, container: Container | None
    ) -> None:
        if container is None:
            return
        try:
            if self._hand_over(agent_id, attempt, container):
                self.deps.runtime.start(container.id)
        except ClawHQError as exc:
            if self.failures.engine_not_ready(exc):
                self.failures.defer(agent_id, attempt, kind, exc)
                return
            reason = f"start failed: {exc.message}"
            self.failures.failed(agent_id, attempt, kind, reason, container)
            raise

    def _restart(self, agent_id: str, attempt: int, container: Container | None) -> None:
        if container is None:
            return
        log.info("restarting agent %s", agent_id)
        self._audit("agent.restart", agent_id)
        try:
            self.deps.networks.require_firewall()
            if container.is_running:
                self.deps.runtime.stop(container.id, self.deps.settings.stop_timeout)
            if self._hand_over(agent_id, attempt, container):
                self.deps.runtime.start(container.id)
        except ClawHQError as exc:
            if self.failures.engine_not_ready(exc):
                self.failures.defer(agent_id, attempt, StartKind.RESTART, exc)
                return
            reason = f"restart failed: {exc.message}"
            self.failures.failed(agent_id, attempt, StartKind.RESTART, reason, None)
            raise

    def _hand_over(self, agent_id: str, attempt: int, container: Container) -> bool:
        """New secrets for this start of an existing container, recorded and written into it
        (it is not running); False when the start was superseded meanwhile: no start then."""
        p = self.deps
        if not handover.takes_secrets_file(container):
            return True  # made by an earlier ClawHQ: its secrets are in its env, unchanged
        with p.sessions.begin() as session:
            agent = current_start(session, agent_id, attempt)
            if agent is None:
                return False
            content = handover.rotate(agent, p.keyring)
        handover.hand_over(p.runtime, container, content)
        return True

    def _stop(self, agent_id: str, container: Container | None) -> None:
        p = self.deps
        if container is not None:
            p.runtime.stop(container.id, p.settings.stop_timeout)
        with p.sessions.begin() as session:
            agent = session.get(Agent, agent_id, with_for_update=True)
            if agent is not None and agent.desired_state is DesiredState.STOPPED:
                t.mark_stopped(agent, p.clock.now())

    def _finish_delete(self, agent_id: str) -> None:
        p = self.deps
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
        self.starts.forget(agent_id)
        self.prober.untrack(agent_id)

    def remove_stray(self, action: Action) -> None:
        self._remove(action.agent_id, action.container, "container.remove_stray")

    def _remove(self, agent_id: str | None, container: Container | None, what: str) -> None:
        if container is None:
            return
        log.info("removing container %s", container.id[:12])
        if self.deps.runtime.remove(container.id):
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
        runtime = self.deps.runtime
        found = runtime.list_managed({labels.AGENT_ID: agent_id})
        if graceful:
            for container in found:
                if container.is_running:
                    runtime.stop(container.id, self.deps.settings.stop_timeout)
        refs = {container_id, container_name(user_id, agent_id)} | {c.id for c in found}
        for ref in refs - {None}:
            runtime.remove(str(ref))

    # -- helpers --------------------------------------------------------------------------

    def _audit(self, action: str, agent_id: str | None, detail: str = "") -> None:
        audit.append(
            self.deps.sessions,
            actor="supervisor",
            action=action,
            agent_id=agent_id,
            detail=detail,
        )
