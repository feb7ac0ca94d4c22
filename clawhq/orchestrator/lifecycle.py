"""The agent lifecycle: deploy, start, stop and destroy, and the wait for a healthy agent.

Rules kept here:
- Operations on one agent are serialized (a per-agent lock in this process, a row lock or
  SQLite's write lock across processes) and each checks the state it starts from.
- The owner's wish is ``desired_state``, written in the same transaction as the status; the
  supervisor converges towards it and never undoes a user's stop.
- A deploy or start the user asked for that fails at any step leaves no container and no port
  lease; the agent is ``ERROR`` with the reason in ``last_error``. A restart the supervisor
  started that fails is retried after a backoff instead.
- Deploy and start return once the container runs; a background waiter (``waiter``) reports
  back, and the agent is ``RUNNING`` once its health path answers ``{"ok": true}``.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from clawhq import status as states
from clawhq.credentials import WEBHOOK_TOKEN_PREFIX, hash_token, new_token
from clawhq.crypto import Keyring, Sealed
from clawhq.db import history, installation
from clawhq.db.models import Agent, User
from clawhq.errors import (
    ClawHQError,
    Conflict,
    NotFound,
    PlanLimitExceeded,
    TooManyRequests,
    Unavailable,
)
from clawhq.observability.metrics import Metrics
from clawhq.orchestrator.health import Probe, http_probe
from clawhq.orchestrator.locks import AgentLocks
from clawhq.orchestrator.ports import PortPool
from clawhq.orchestrator.reconcile import backoff_delay
from clawhq.orchestrator.spec import AgentSecrets, build_spec, container_name, volume_name
from clawhq.orchestrator.waiter import StartWaiter
from clawhq.runtime import Container, ContainerStats, LogLine, Runtime, labels
from clawhq.settings import Settings
from clawhq.status import AgentStatus, DesiredState

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 5
MAX_ERROR_CHARS = 1000


@dataclass(frozen=True)
class Attempt:
    """One start of one agent's container, followed by a waiter until it is healthy.

    ``generation`` is the agent's ``start_generation`` when this start began: a waiter whose
    start has been superseded (stopped, started again, redeployed) must not act on the agent.
    """

    agent_id: str
    container_id: str
    port: int | None
    generation: int
    supervised: bool = False
    kind: str = "deploy"  # deploy, start or restart: the deploy-duration metric's label
    started: float = field(default_factory=time.monotonic)


def now() -> datetime:
    return datetime.now(UTC)


def set_status(agent: Agent, status: AgentStatus) -> None:
    if agent.status is not status:
        agent.status = status
        agent.status_changed_at = now()


def set_error(agent: Agent, reason: str | None) -> None:
    agent.last_error = reason[:MAX_ERROR_CHARS] if reason else None


class AgentOrchestrator:
    """Owns the lifecycle of every agent; talks to the engine only through :class:`Runtime`."""

    def __init__(
        self,
        settings: Settings,
        runtime: Runtime,
        sessions: sessionmaker[Session],
        keyring: Keyring,
        *,
        probe: Probe = http_probe,
        metrics: Metrics | None = None,
        max_background: int = 16,
    ) -> None:
        self.settings = settings
        self.runtime = runtime
        self.sessions = sessions
        self.locks = AgentLocks()
        self.ports = PortPool(settings.port_range, str(settings.agent_bind_ip))
        self.probe = probe
        self.metrics = metrics or Metrics()
        self._keyring = keyring
        self.waiter = StartWaiter(self, max_background)
        self._webhook_base = settings.webhook_base_url
        self._prepared = False
        self._instance: str | None = None
        self._claim_lock = threading.Lock()

    # -- set-up ---------------------------------------------------------------------------

    def claim(self) -> str:
        """This installation's id; from the first call on, the runtime sees only its containers.

        Installations sharing one engine (staging and production, say) must never adopt or
        remove each other's containers; reads the database on first use.
        """
        with self._claim_lock:
            if self._instance is None:
                self._instance = installation.instance_id(self.sessions)
                self.runtime.claim(self._instance)
            return self._instance

    def prepare(self) -> str:
        """Make sure the agent network exists; return its gateway address on the host."""
        self.claim()
        gateway = self.runtime.ensure_network(self.settings.agent_network)
        if self._webhook_base is None:
            self._webhook_base = f"http://{gateway}:{self.settings.port}"
        self._prepared = True
        return gateway

    @property
    def webhook_base_url(self) -> str | None:
        """Where agents post webhooks: ``CLAWHQ_WEBHOOK_BASE_URL``, else the network gateway."""
        return self._webhook_base

    def shutdown(self) -> None:
        """Stop background waiters. Agents keep running; the next start adopts them."""
        self.waiter.shutdown()

    # -- what the owner asks for ----------------------------------------------------------

    def deploy(self, agent_id: str, owner_id: str | None = None) -> Agent:
        """(Re)create the agent's container from its current configuration and start it.

        With ``owner_id``, every operation treats another user's agent as missing.
        """
        with self.locks.hold(agent_id):
            return self._deploy(agent_id, owner_id, supervised=False)

    def start(self, agent_id: str, owner_id: str | None = None) -> Agent:
        """Start a stopped agent; an agent without a container is deployed."""
        with self.locks.hold(agent_id):
            with self.sessions.begin() as session:
                agent = self.load(session, agent_id, owner_id)
                if agent.status in (AgentStatus.RUNNING, AgentStatus.DEPLOYING):
                    return agent
                states.require(agent.status, states.START_FROM, "start")
                container = self._inspect(agent.container_id)
                if container is None:
                    attempt = None
                else:
                    self._check_capacity(session)
                    agent.desired_state = DesiredState.RUNNING
                    agent.start_generation += 1
                    set_status(agent, AgentStatus.DEPLOYING)
                    attempt = Attempt(
                        agent_id,
                        container.id,
                        agent.container_port,
                        agent.start_generation,
                        kind="start",
                    )
            if attempt is None:
                return self._deploy(agent_id, owner_id, supervised=False)
            try:
                self.runtime.start(attempt.container_id)
            except ClawHQError as exc:
                self.fail_start(attempt, f"start failed: {exc.message}")
                raise
            self.watch(attempt)
            return self.get(agent_id)

    def stop(self, agent_id: str, owner_id: str | None = None) -> Agent:
        """Stop gracefully (SIGTERM, then SIGKILL after ``CLAWHQ_STOP_TIMEOUT``)."""
        with self.locks.hold(agent_id):
            with self.sessions.begin() as session:
                agent = self.load(session, agent_id, owner_id)
                agent.desired_state = DesiredState.STOPPED
                agent.next_restart_at = None
                if agent.status is AgentStatus.STOPPED:
                    return agent
                states.require(agent.status, states.STOP_FROM, "stop")
                set_status(agent, AgentStatus.STOPPING)
                container_id = agent.container_id
            # If this fails the agent stays STOPPING with desired STOPPED: the supervisor
            # finishes the stop once the engine answers again.
            if container_id:
                self.runtime.stop(container_id, self.settings.stop_timeout)
            return self.mark_stopped(agent_id)

    def destroy(
        self, agent_id: str, owner_id: str | None = None, *, keep_workspace: bool = True
    ) -> None:
        """Remove the container and the port lease, the workspace volume unless kept, the row.

        The wish to delete is recorded first, so a crash half-way is finished by the
        supervisor rather than leaving a container behind.
        """
        with self.locks.hold(agent_id):
            with self.sessions.begin() as session:
                agent = self.load(session, agent_id, owner_id)
                agent.desired_state = DesiredState.DELETED
                agent.keep_workspace = keep_workspace
            self.finish_delete(agent_id)

    # -- observation ----------------------------------------------------------------------

    def container_states(self, user_id: str) -> dict[str, str]:
        """What the engine says of each of a user's agent containers, by agent id (one call)."""
        self.claim()
        found = self.runtime.list_managed({labels.USER_ID: user_id})
        return {c.agent_id: c.state.value for c in found if c.agent_id}

    def container_state(self, container_id: str | None) -> str:
        """``running``, ``exited``… for an agent's container, or ``missing`` when it has none."""
        container = self._inspect(container_id)
        return container.state.value if container else "missing"

    def running_container(self, agent: Agent) -> Container:
        """The agent's container, which must exist (and is usually running)."""
        container = self._inspect(agent.container_id)
        if container is None:
            raise Conflict("the agent has no container: deploy it first", code="agent_not_deployed")
        return container

    def logs(self, agent: Agent, tail: int) -> list[str]:
        return self.runtime.logs(self.running_container(agent).id, tail).splitlines()

    def log_lines(
        self, agent: Agent, tail: int, since: datetime | None = None
    ) -> tuple[list[LogLine], bool]:
        """Timestamped log lines (see ``Runtime.log_lines``) and whether it still runs."""
        container = self.running_container(agent)
        return self.runtime.log_lines(container.id, tail=tail, since=since), container.is_running

    def stats(self, agent: Agent) -> ContainerStats:
        container = self.running_container(agent)
        if not container.is_running:
            raise Conflict("the agent is not running", code="agent_not_running")
        return self.runtime.stats(container.id)

    def health_url(self, port: int | None) -> str:
        """Where ClawHQ probes an agent: its published port, on the host."""
        host = str(self.settings.agent_bind_ip)
        host = "127.0.0.1" if host == "0.0.0.0" else host
        return f"http://{host}:{port}{self.settings.agent_health_path}"

    def watched(self) -> set[str]:
        """Agents whose start a waiter in this process follows."""
        return self.waiter.watched()

    def is_current(self, agent: Agent, attempt: Attempt) -> bool:
        """Whether ``attempt`` is still the agent's latest start."""
        return agent.start_generation == attempt.generation and agent.container_id in (
            None,
            attempt.container_id,
        )

    # -- building blocks shared with the supervisor ---------------------------------------

    def finish_delete(self, agent_id: str) -> None:
        with self.locks.hold(agent_id):
            with self.sessions.begin() as session:
                agent = self.find(session, agent_id)
                if agent is None or agent.desired_state is not DesiredState.DELETED:
                    return
                user_id, container_id = agent.user_id, agent.container_id
                keep_workspace = agent.keep_workspace
            if keep_workspace and container_id:
                self.runtime.stop(container_id, self.settings.stop_timeout)  # let it flush
            self._remove_all(agent_id, user_id, container_id)
            if not keep_workspace:
                self.runtime.remove_volume(volume_name(agent_id))
            with self.sessions.begin() as session:
                self.ports.release(session, agent_id)
                agent = self.find(session, agent_id)
                if agent is not None:
                    session.delete(agent)

    def mark_stopped(self, agent_id: str) -> Agent:
        with self.sessions.begin() as session:
            agent = self.load(session, agent_id)
            if agent.desired_state is DesiredState.STOPPED:
                set_status(agent, AgentStatus.STOPPED)
            return agent

    def deploy_supervised(self, agent_id: str) -> None:
        """Recreate the container of an agent that should run (the supervisor's restart)."""
        with self.locks.hold(agent_id):
            try:
                self._deploy(agent_id, None, supervised=True)
            except ClawHQError as exc:
                log.warning("recreating agent %s failed: %s", agent_id, exc.message)

    def watch(self, attempt: Attempt) -> None:
        """Follow a starting container until it is healthy, fails, or runs out of time."""
        self.waiter.watch(attempt)

    def fail_start(self, attempt: Attempt, reason: str) -> None:
        """Undo a start the user asked for: no container, no lease, ``ERROR`` with the reason."""
        agent_id = attempt.agent_id
        with self.locks.hold(agent_id):
            with self.sessions.begin() as session:
                agent = self.find(session, agent_id)
                if agent is None or agent.status is not AgentStatus.DEPLOYING:
                    return  # superseded: stopped, deleted or redeployed meanwhile
                if not self.is_current(agent, attempt):
                    return
            log.warning("agent %s failed to start: %s", agent_id, reason)
            self._observe(attempt, "failed")
            try:
                self.runtime.remove(attempt.container_id)
            except ClawHQError as exc:  # the supervisor removes it once the engine is back
                log.error("could not remove container of failed agent %s: %s", agent_id, exc)
            with self.sessions.begin() as session:
                agent = self.find(session, agent_id)
                if agent is None:
                    return
                self.ports.release(session, agent_id)
                agent.container_id = None
                agent.container_port = None
                agent.desired_state = DesiredState.STOPPED
                set_status(agent, AgentStatus.ERROR)
                set_error(agent, reason)

    def mark_running(self, attempt: Attempt) -> None:
        """The waiter saw the agent healthy: ``RUNNING``, unless its start was superseded."""
        agent_id = attempt.agent_id
        with self.locks.hold(agent_id), self.sessions.begin() as session:
            agent = self.find(session, agent_id)
            if (
                agent is not None
                and agent.status in (AgentStatus.DEPLOYING, AgentStatus.RESTARTING)
                and agent.desired_state is DesiredState.RUNNING
                and agent.container_id == attempt.container_id
                and agent.start_generation == attempt.generation
            ):
                set_status(agent, AgentStatus.RUNNING)
                agent.next_restart_at = None
                agent.last_healthy_at = now()
                self._observe(attempt, "running")
                log.info("agent %s is RUNNING", agent_id)

    def fail_restart(self, attempt: Attempt, reason: str, container: Container | None) -> None:
        """A restart the supervisor started did not come up healthy: stop it, try again later."""
        with self.locks.hold(attempt.agent_id):
            with self.sessions() as session:
                agent = self.find(session, attempt.agent_id)
                if agent is None or not self.is_current(agent, attempt):
                    return
            if container is not None and container.is_running:
                self._stop_quietly(container.id)
            self._observe(attempt, "failed")
            self.schedule_restart(attempt.agent_id, reason, container, attempt)

    def schedule_restart(
        self,
        agent_id: str,
        reason: str,
        container: Container | None = None,
        attempt: Attempt | None = None,
    ) -> None:
        """Record why an agent that should run is down, and when it will be restarted."""
        with self.locks.hold(agent_id), self.sessions.begin() as session:
            agent = self.find(session, agent_id)
            if agent is None or agent.desired_state is not DesiredState.RUNNING:
                return
            if attempt is not None and not self.is_current(agent, attempt):
                return
            if container is not None and not container.is_running:
                agent.last_exit_code = container.exit_code
                agent.oom_killed = container.oom_killed
            delay = self.back_off(agent)
            set_status(agent, AgentStatus.RESTARTING)
            set_error(agent, reason)
            log.warning("agent %s is down (%s); restart in %.0fs", agent_id, reason, delay)

    def back_off(self, agent: Agent) -> float:
        """Take the next step of the agent's restart backoff; return its delay in seconds."""
        agent.backoff_step += 1
        delay = backoff_delay(
            agent.backoff_step,
            self.settings.restart_backoff_initial,
            self.settings.restart_backoff_max,
        )
        agent.next_restart_at = now() + timedelta(seconds=delay)
        return delay

    def describe_down(self, container: Container | None) -> str:
        """Why a container is not serving, in words for its owner, with its last log lines."""
        if container is None:
            return "the agent's container disappeared"
        return container.describe_exit() + self.log_tail(container.id)

    def log_tail(self, container_id: str) -> str:
        try:
            tail = self.runtime.logs(container_id, LOG_TAIL_LINES).strip()
        except ClawHQError:
            return ""
        return f"; last log lines: {tail}" if tail else ""

    def get(self, agent_id: str) -> Agent:
        with self.sessions() as session:
            return self.load(session, agent_id)

    def load(self, session: Session, agent_id: str, owner_id: str | None = None) -> Agent:
        agent = self.find(session, agent_id)
        if (
            agent is None
            or agent.desired_state is DesiredState.DELETED
            or (owner_id is not None and agent.user_id != owner_id)
        ):
            raise NotFound(f"agent {agent_id} not found", code="agent_not_found")
        return agent

    @staticmethod
    def find(session: Session, agent_id: str) -> Agent | None:
        query = select(Agent).where(Agent.id == agent_id).with_for_update()
        return session.scalars(query).one_or_none()

    # -- internals ------------------------------------------------------------------------

    def _deploy(self, agent_id: str, owner_id: str | None, *, supervised: bool) -> Agent:
        if not self._prepared:
            self.prepare()
        with self.sessions.begin() as session:
            agent = self.load(session, agent_id, owner_id)
            if supervised:
                if agent.desired_state is not DesiredState.RUNNING:
                    return agent
            else:
                states.require(agent.status, states.DEPLOY_FROM, "deploy")
                self._check_capacity(session)
            secrets_ = AgentSecrets(
                api_key=self._api_key_for(session, agent),
                webhook_token=new_token(WEBHOOK_TOKEN_PREFIX),
                gateway_token=secrets.token_urlsafe(32),
                channel_env=self._channel_env_for(agent),
            )
            port = self.ports.lease(session, agent_id)  # exhausted: rollback, nothing changed
            old_container = agent.container_id
            agent.webhook_token_hash = hash_token(secrets_.webhook_token)
            agent.container_id = None
            agent.container_port = port
            agent.desired_state = DesiredState.RUNNING
            agent.start_generation += 1
            generation = agent.start_generation
            if not supervised:
                set_status(agent, AgentStatus.DEPLOYING)
                set_error(agent, None)
                agent.last_exit_code, agent.oom_killed = None, False
                agent.backoff_step, agent.next_restart_at = 0, None
            session.flush()  # the status change enters the history before the steps that follow
            history.record(session, agent_id, "port_leased", f"host port {port}")
            spec = build_spec(
                self.settings, agent, port, secrets_, str(self._webhook_base), self.claim()
            )
        container_id: str | None = None
        try:
            self._remove_all(agent_id, spec.labels[labels.USER_ID], old_container)
            container_id = self.runtime.create(spec).id
            with self.sessions.begin() as session:
                agent = self.load(session, agent_id)
                agent.container_id = container_id
                agent.deployed_at = now()
                history.record(session, agent_id, "container_created", container_id[:12])
            self.runtime.start(container_id)
            with self.sessions.begin() as session:
                history.record(
                    session, agent_id, "container_started", "waiting for a healthy answer"
                )
        except ClawHQError as exc:
            reason = f"deploy failed: {exc.message}"
            kind = "restart" if supervised else "deploy"
            failed = Attempt(
                agent_id, container_id or spec.name, port, generation, supervised, kind
            )
            if supervised:
                if container_id:
                    self.runtime.remove(container_id)
                self._observe(failed, "failed")
                self.schedule_restart(agent_id, reason, attempt=failed)
            else:
                self.fail_start(failed, reason)
            raise
        kind = "restart" if supervised else "deploy"
        self.watch(Attempt(agent_id, container_id, port, generation, supervised, kind))
        return self.get(agent_id)

    def _remove_all(self, agent_id: str, user_id: str, container_id: str | None) -> None:
        """Remove the agent's containers: the recorded one, by name, and any labelled one."""
        refs = {container_id, container_name(user_id, agent_id)}
        refs |= {c.id for c in self.runtime.list_managed({labels.AGENT_ID: agent_id})}
        for ref in refs - {None}:
            self.runtime.remove(str(ref))

    def _check_capacity(self, session: Session) -> None:
        in_flight = session.scalar(
            select(func.count()).select_from(Agent).where(Agent.status == AgentStatus.DEPLOYING)
        )
        if (in_flight or 0) >= self.settings.max_deploys_in_flight:
            raise TooManyRequests(
                f"{in_flight} deploys are already in flight "
                f"(CLAWHQ_MAX_DEPLOYS_IN_FLIGHT={self.settings.max_deploys_in_flight}); retry soon",
                code="deploy_capacity_reached",
                retry_after=5,
            )

    def _inspect(self, container_id: str | None) -> Container | None:
        return self.runtime.inspect(container_id) if container_id else None

    def _channel_env_for(self, agent: Agent) -> dict[str, str]:
        if agent.channel_secrets_ciphertext is None or agent.channel_secrets_key_id is None:
            return {}
        sealed = Sealed(agent.channel_secrets_ciphertext, agent.channel_secrets_key_id)
        return dict(json.loads(self._keyring.open(sealed, agent.channel_secrets_context)))

    def _api_key_for(self, session: Session, agent: Agent) -> str:
        if agent.api_key_ciphertext is not None and agent.api_key_key_id is not None:
            sealed = Sealed(agent.api_key_ciphertext, agent.api_key_key_id)
            return self._keyring.open(sealed, agent.api_key_context)
        user = session.get(User, agent.user_id)
        if user is None or not user.plan.bundled_keys_allowed:
            raise PlanLimitExceeded(
                "this agent has no API key of its own and your plan does not include "
                "ClawHQ's bundled keys: add an API key or upgrade your plan",
                code="bundled_keys_not_allowed",
            )
        key = self.settings.bundled_key(agent.model_provider)
        if not key:
            raise Unavailable(
                f"this ClawHQ has no bundled key for provider {agent.model_provider!r}: "
                "add your own API key to the agent",
                code="bundled_key_unavailable",
            )
        return key

    def _observe(self, attempt: Attempt, outcome: str) -> None:
        elapsed = time.monotonic() - attempt.started
        self.metrics.deploy_seconds.labels(attempt.kind, outcome).observe(elapsed)

    def _stop_quietly(self, container_id: str) -> None:
        try:
            self.runtime.stop(container_id, self.settings.stop_timeout)
        except ClawHQError as exc:
            log.warning("could not stop container %s: %s", container_id[:12], exc.message)
