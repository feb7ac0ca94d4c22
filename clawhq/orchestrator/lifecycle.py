"""The agent lifecycle: deploy, start, stop and destroy, and the wait for a healthy agent.

Rules kept here:
- Operations on one agent are serialized (a per-agent lock in this process, a row lock or
  SQLite's write lock across processes) and each checks the state it starts from.
- A deploy or start that fails at any step leaves no container and no port lease; the agent
  is ``ERROR`` with the reason in ``last_error``.
- Deploy and start return once the container runs; a background waiter marks the agent
  ``RUNNING`` when its health path answers ``{"ok": true}``, or ``ERROR`` when it never does.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
import weakref
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from clawhq import status as states
from clawhq.credentials import WEBHOOK_TOKEN_PREFIX, hash_token, new_token
from clawhq.crypto import Keyring, Sealed
from clawhq.db.models import Agent, User
from clawhq.errors import ClawHQError, NotFound, PlanLimitExceeded, Unavailable
from clawhq.orchestrator.health import Probe, http_probe
from clawhq.orchestrator.ports import PortPool
from clawhq.orchestrator.spec import AgentSecrets, build_spec, container_name, volume_name
from clawhq.runtime import Runtime, labels
from clawhq.settings import Settings
from clawhq.status import AgentStatus

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 5
MAX_ERROR_CHARS = 1000


class AgentLocks:
    """One re-entrant lock per agent id, dropped when nobody holds a reference to it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: weakref.WeakValueDictionary[str, _Lock] = weakref.WeakValueDictionary()

    @contextlib.contextmanager
    def hold(self, agent_id: str) -> Iterator[None]:
        with self._guard:
            lock = self._locks.get(agent_id)
            if lock is None:
                lock = _Lock()
                self._locks[agent_id] = lock
        with lock.rlock:
            yield


class _Lock:
    __slots__ = ("__weakref__", "rlock")

    def __init__(self) -> None:
        self.rlock = threading.RLock()


def _now() -> datetime:
    return datetime.now(UTC)


def _set_status(agent: Agent, status: AgentStatus, error: str | None = None) -> None:
    agent.status = status
    agent.status_changed_at = _now()
    agent.last_error = error[:MAX_ERROR_CHARS] if error else None


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
        max_background: int = 16,
    ) -> None:
        self.settings = settings
        self.runtime = runtime
        self.ports = PortPool(settings.port_range, str(settings.agent_bind_ip))
        self._sessions = sessions
        self._keyring = keyring
        self._probe = probe
        self._locks = AgentLocks()
        self._executor = ThreadPoolExecutor(max_background, thread_name_prefix="clawhq-waiter")
        self._webhook_base = settings.webhook_base_url
        self._prepared = False
        self._closed = False

    # -- set-up ---------------------------------------------------------------------------

    def prepare(self) -> str:
        """Make sure the agent network exists; return its gateway address on the host."""
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
        """Stop background waiters. Agents keep running; the next start picks them up."""
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- operations -----------------------------------------------------------------------

    def deploy(self, agent_id: str, owner_id: str | None = None) -> Agent:
        """(Re)create the agent's container from its current configuration and start it.

        With ``owner_id``, every operation treats another user's agent as missing.
        """
        with self._locks.hold(agent_id):
            return self._deploy(agent_id, owner_id)

    def start(self, agent_id: str, owner_id: str | None = None) -> Agent:
        """Start a stopped agent; an agent without a container is deployed."""
        with self._locks.hold(agent_id):
            with self._sessions.begin() as session:
                agent = self._load(session, agent_id, owner_id)
                if agent.status in (AgentStatus.RUNNING, AgentStatus.DEPLOYING):
                    return agent
                states.require(agent.status, states.START_FROM, "start")
                container = self.runtime.inspect(agent.container_id) if agent.container_id else None
                if container is not None:
                    _set_status(agent, AgentStatus.DEPLOYING)
                port = agent.container_port
            if container is None:
                return self._deploy(agent_id, owner_id)
            try:
                self.runtime.start(container.id)
            except ClawHQError as exc:
                self._fail(agent_id, container.id, f"start failed: {exc.message}")
                raise
            self._watch(agent_id, container.id, port)
            return self._get(agent_id)

    def stop(self, agent_id: str, owner_id: str | None = None) -> Agent:
        """Stop gracefully (SIGTERM, then SIGKILL after ``CLAWHQ_STOP_TIMEOUT``)."""
        with self._locks.hold(agent_id):
            with self._sessions.begin() as session:
                agent = self._load(session, agent_id, owner_id)
                if agent.status is AgentStatus.STOPPED:
                    return agent
                states.require(agent.status, states.STOP_FROM, "stop")
                previous = agent.status
                _set_status(agent, AgentStatus.STOPPING)
                container_id = agent.container_id
            try:
                if container_id:
                    self.runtime.stop(container_id, self.settings.stop_timeout)
            except ClawHQError:
                with self._sessions.begin() as session:
                    _set_status(self._load(session, agent_id), previous)
                raise
            with self._sessions.begin() as session:
                agent = self._load(session, agent_id)
                _set_status(agent, AgentStatus.STOPPED)
                return agent

    def destroy(
        self, agent_id: str, owner_id: str | None = None, *, keep_workspace: bool = False
    ) -> None:
        """Remove the container and the port lease, the workspace volume unless kept, the row."""
        with self._locks.hold(agent_id):
            with self._sessions.begin() as session:
                agent = self._load(session, agent_id, owner_id)
                user_id, container_id = agent.user_id, agent.container_id
            if keep_workspace and container_id:
                # Let the agent flush its workspace before it goes.
                self.runtime.stop(container_id, self.settings.stop_timeout)
            for ref in {container_id, container_name(user_id, agent_id)} - {None}:
                self.runtime.remove(str(ref))
            if not keep_workspace:
                self.runtime.remove_volume(volume_name(agent_id))
            with self._sessions.begin() as session:
                self.ports.release(session, agent_id)
                agent = session.get(Agent, agent_id)
                if agent is not None:
                    session.delete(agent)

    # -- observation ----------------------------------------------------------------------

    def container_states(self, user_id: str) -> dict[str, str]:
        """What the engine says of each of a user's agent containers, by agent id (one call)."""
        found = self.runtime.list_managed({labels.USER_ID: user_id})
        return {c.agent_id: c.state.value for c in found if c.agent_id}

    def container_state(self, agent: Agent) -> str:
        """``running``, ``exited``… for the agent's container, or ``missing`` when it has none."""
        container = self.runtime.inspect(agent.container_id) if agent.container_id else None
        return container.state.value if container else "missing"

    # -- internals ------------------------------------------------------------------------

    def _deploy(self, agent_id: str, owner_id: str | None) -> Agent:
        if not self._prepared:
            self.prepare()
        webhook_base = str(self._webhook_base)
        with self._sessions.begin() as session:
            agent = self._load(session, agent_id, owner_id)
            states.require(agent.status, states.DEPLOY_FROM, "deploy")
            secrets_ = AgentSecrets(
                api_key=self._api_key_for(session, agent),
                webhook_token=new_token(WEBHOOK_TOKEN_PREFIX),
                gateway_token=secrets.token_urlsafe(32),
            )
            port = self.ports.lease(session, agent_id)  # exhausted: rollback, nothing changed
            old_container = agent.container_id
            agent.webhook_token_hash = hash_token(secrets_.webhook_token)
            agent.container_id = None
            agent.container_port = port
            _set_status(agent, AgentStatus.DEPLOYING)
            spec = build_spec(self.settings, agent, port, secrets_, webhook_base)
        container_id: str | None = None
        try:
            for ref in {old_container, spec.name} - {None}:
                self.runtime.remove(str(ref))
            container_id = self.runtime.create(spec).id
            with self._sessions.begin() as session:
                agent = self._load(session, agent_id)
                agent.container_id = container_id
                agent.deployed_at = _now()
            self.runtime.start(container_id)
        except ClawHQError as exc:
            self._fail(agent_id, container_id or spec.name, f"deploy failed: {exc.message}")
            raise
        self._watch(agent_id, container_id, port)
        return self._get(agent_id)

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

    def _watch(self, agent_id: str, container_id: str, port: int | None) -> None:
        if not self._closed:
            self._executor.submit(self._await_healthy, agent_id, container_id, port)

    def _await_healthy(self, agent_id: str, container_id: str, port: int | None) -> None:
        host = str(self.settings.agent_bind_ip)
        host = "127.0.0.1" if host == "0.0.0.0" else host
        url = f"http://{host}:{port}{self.settings.agent_health_path}"
        deadline = time.monotonic() + self.settings.start_timeout
        reason = f"no healthy answer on {self.settings.agent_health_path} within " + (
            f"{self.settings.start_timeout:g}s"
        )
        try:
            while not self._closed:
                container = self.runtime.inspect(container_id)
                if container is None:
                    reason = "the container disappeared while starting"
                    break
                if not container.is_running:
                    reason = container.describe_exit() + self._log_tail(container_id)
                    break
                if self._probe(url):
                    self._mark_running(agent_id, container_id)
                    return
                if time.monotonic() >= deadline:
                    reason += self._log_tail(container_id)
                    break
                time.sleep(self.settings.startup_poll_interval)
            else:
                return
        except ClawHQError as exc:
            reason = f"lost track of the container while starting: {exc.message}"
        except Exception:  # a waiter must never die without leaving the agent in a clear state
            log.exception("health waiter for agent %s failed", agent_id)
            reason = "internal error while waiting for the agent to become healthy"
        self._fail(agent_id, container_id, reason)

    def _mark_running(self, agent_id: str, container_id: str) -> None:
        with self._sessions.begin() as session:
            agent = self._find(session, agent_id)
            if (
                agent is not None
                and agent.status is AgentStatus.DEPLOYING
                and agent.container_id == container_id
            ):
                _set_status(agent, AgentStatus.RUNNING)
                log.info("agent %s is RUNNING", agent_id)

    def _fail(self, agent_id: str, container_ref: str, reason: str) -> None:
        """Undo a deploy or start: container and lease gone, the agent ERROR with ``reason``."""
        with self._locks.hold(agent_id):
            with self._sessions.begin() as session:
                agent = self._find(session, agent_id)
                if agent is None or agent.status is not AgentStatus.DEPLOYING:
                    return  # superseded: stopped, deleted or redeployed meanwhile
                if agent.container_id not in (None, container_ref):
                    return
            log.warning("agent %s failed to start: %s", agent_id, reason)
            try:
                self.runtime.remove(container_ref)
            except ClawHQError as exc:  # the reconciler removes it once the engine is back
                log.error("could not remove container of failed agent %s: %s", agent_id, exc)
            with self._sessions.begin() as session:
                agent = self._find(session, agent_id)
                if agent is None:
                    return
                self.ports.release(session, agent_id)
                agent.container_id = None
                agent.container_port = None
                _set_status(agent, AgentStatus.ERROR, reason)

    def _log_tail(self, container_id: str) -> str:
        try:
            tail = self.runtime.logs(container_id, LOG_TAIL_LINES).strip()
        except ClawHQError:
            return ""
        return f"; last log lines: {tail}" if tail else ""

    def _get(self, agent_id: str) -> Agent:
        with self._sessions() as session:
            return self._load(session, agent_id)

    def _load(self, session: Session, agent_id: str, owner_id: str | None = None) -> Agent:
        agent = self._find(session, agent_id)
        if agent is None or (owner_id is not None and agent.user_id != owner_id):
            raise NotFound(f"agent {agent_id} not found", code="agent_not_found")
        return agent

    @staticmethod
    def _find(session: Session, agent_id: str) -> Agent | None:
        query = select(Agent).where(Agent.id == agent_id).with_for_update()
        return session.scalars(query).one_or_none()
