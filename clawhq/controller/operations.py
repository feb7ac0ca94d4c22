"""What owners and admins ask of agents: checked, written as desired state, then queued.

Each operation checks what it can before anything changes (state, capacity, keys, a port:
a refused request leaves the agent as it was), writes the wish and bumps the agent's
generation in one transaction (:mod:`.desired`), queues the agent, and waits for the
controller's first sync of that generation, so the caller gets the same answer as before
the controller existed: 202 with ``DEPLOYING``, 200 with ``STOPPED``, or the engine's error.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from clawhq import status as states
from clawhq.controller import desired
from clawhq.controller.controller import Controller
from clawhq.controller.deps import ControllerDeps
from clawhq.controller.secrets import check_api_key
from clawhq.db.models import Agent
from clawhq.errors import Conflict, NotFound, TooManyRequests
from clawhq.status import AgentStatus, DesiredState

log = logging.getLogger(__name__)

S = AgentStatus
#: How long an operation waits for the controller's first step before answering anyway.
WAIT_SECONDS = 60.0


def load(
    session: Session, agent_id: str, owner_id: str | None = None, *, lock: bool = True
) -> Agent:
    """The agent, locked (unless not ``lock``); another user's agent (with ``owner_id``) is a
    missing one."""
    query = select(Agent).where(Agent.id == agent_id)
    agent = session.scalars(query.with_for_update() if lock else query).one_or_none()
    if (
        agent is None
        or agent.desired_state is DesiredState.DELETED
        or (owner_id is not None and agent.user_id != owner_id)
    ):
        raise NotFound(f"agent {agent_id} not found", code="agent_not_found")
    return agent


def _busy(held: str) -> Conflict:
    return Conflict(f"the agent is busy: {held}; retry once it is done", code="agent_busy")


class AgentJobs:
    """The agents a long job holds (a backup, a restore: :mod:`.backups`), in this process:
    while one does, owners' operations on the agent and other jobs are refused (409
    ``agent_busy``) rather than interleaved with the job's own stop and start."""

    def __init__(self) -> None:
        self._held: dict[str, str] = {}
        self._lock = threading.Lock()

    def claim(self, agent_id: str, what: str) -> None:
        with self._lock:
            if (held := self._held.get(agent_id)) is not None:
                raise Conflict(
                    f"the agent is busy: {held}; retry once it is done", code="agent_busy"
                )
            self._held[agent_id] = what

    def release(self, agent_id: str) -> None:
        with self._lock:
            self._held.pop(agent_id, None)

    def holds(self, agent_id: str) -> bool:
        with self._lock:
            return agent_id in self._held

    def check(self, agent_id: str) -> None:
        with self._lock:
            if (held := self._held.get(agent_id)) is not None:
                raise Conflict(
                    f"the agent is busy: {held}; retry once it is done", code="agent_busy"
                )


class Operations:
    def __init__(
        self,
        deps: ControllerDeps,
        controller: Controller,
        *,
        inline: bool = False,
        jobs: AgentJobs | None = None,
    ) -> None:
        self.deps = deps
        self.controller = controller
        #: Tests without controller threads: operations run the controller themselves.
        self.inline = inline
        self.jobs = jobs or AgentJobs()

    def deploy(self, agent_id: str, owner_id: str | None = None, *, job: bool = False) -> Agent:
        """(Re)create the agent's container from its current spec and start it."""
        self._engine_ready()
        if not job:
            self.jobs.check(agent_id)
        with self.deps.sessions.begin() as session:
            agent = load(session, agent_id, owner_id)
            states.require(agent.status, states.DEPLOY_FROM, "deploy")
            self._admit(session, agent)
            desired.request_recreate(agent)
            generation = agent.generation
        return self._settle(agent_id, generation)

    def start(self, agent_id: str, owner_id: str | None = None, *, job: bool = False) -> Agent:
        """Start a stopped agent (in its container, or a new one when it has none or it is
        out of date); a running or deploying agent is left as it is."""
        if not job:
            self.jobs.check(agent_id)
        with self.deps.sessions.begin() as session:
            agent = load(session, agent_id, owner_id)
            if agent.status in (S.RUNNING, S.DEPLOYING):
                if agent.desired_state is DesiredState.RUNNING:
                    return agent  # running, or about to: nothing to add
                # A stop not carried out yet: the owner changed their mind; it still runs.
            else:
                states.require(agent.status, states.START_FROM, "start")
                self._engine_ready()
                self._admit(session, agent)
            desired.request_start(agent)
            generation = agent.generation
        return self._settle(agent_id, generation)

    def stop(self, agent_id: str, owner_id: str | None = None, *, job: bool = False) -> Agent:
        """Stop gracefully (SIGTERM, then SIGKILL after ``CLAWHQ_STOP_TIMEOUT``)."""
        if not job:
            self.jobs.check(agent_id)
        with self.deps.sessions.begin() as session:
            agent = load(session, agent_id, owner_id)
            if agent.status is S.STOPPED and agent.desired_state is DesiredState.STOPPED:
                return agent
            if agent.status is not S.STOPPED:
                states.require(agent.status, states.STOP_FROM, "stop")
            desired.request_stop(agent)
            generation = agent.generation
        return self._settle(agent_id, generation)

    def destroy(
        self,
        agent_id: str,
        owner_id: str | None = None,
        *,
        keep_workspace: bool = True,
        job: bool = False,
    ) -> None:
        """Remove the container, the port lease, the workspace unless kept, and the row.

        The wish is recorded first: a crash half-way is finished by the controller."""
        if not job:
            self.jobs.check(agent_id)
        with self.deps.sessions.begin() as session:
            agent = load(session, agent_id, owner_id)
            desired.request_delete(agent, keep_workspace=keep_workspace)
            generation = agent.generation
        self._wait(agent_id, generation)

    def pin_image(self, agent_id: str, image: str | None) -> Agent:
        """Pin the agent's image (an admin's): drift until a rollout or its next start."""
        with self.deps.sessions.begin() as session:
            agent = load(session, agent_id)
            desired.pin_image(agent, image)
        return self.get(agent_id)

    def get(self, agent_id: str) -> Agent:
        with self.deps.sessions() as session:
            agent = session.get(Agent, agent_id)
            if agent is None:
                raise NotFound(f"agent {agent_id} not found", code="agent_not_found")
            return agent

    # -- internals ------------------------------------------------------------------------

    def _settle(self, agent_id: str, generation: int) -> Agent:
        self._wait(agent_id, generation)
        return self.get(agent_id)

    def _wait(self, agent_id: str, generation: int) -> None:
        future = self.controller.completions.expect(agent_id, generation)
        self.controller.enqueue(agent_id)
        if self.inline:
            self.controller.run_pending()
            if not future.done():
                return
        try:
            future.result(timeout=WAIT_SECONDS)
        except concurrent.futures.TimeoutError:
            log.warning("agent %s: the controller has not acted within %gs", agent_id, WAIT_SECONDS)

    def _admit(self, session: Session, agent: Agent) -> None:
        """Firewall, disk cap, capacity, key and port, checked before anything changes."""
        self.deps.networks.require_firewall()
        self.deps.specs.disk_of(session, agent)  # in production: no start without a cap
        in_flight = session.scalar(
            select(func.count()).select_from(Agent).where(Agent.status == S.DEPLOYING)
        )
        limit = self.deps.settings.max_deploys_in_flight
        if (in_flight or 0) >= limit:
            raise TooManyRequests(
                f"{in_flight} deploys are already in flight "
                f"(CLAWHQ_MAX_DEPLOYS_IN_FLIGHT={limit}); retry soon",
                code="deploy_capacity_reached",
                retry_after=5,
            )
        check_api_key(session, agent, self.deps.settings)
        self.deps.ports.lease(session, agent.id)  # exhausted: rolled back, nothing changed

    def _engine_ready(self) -> None:
        """Refuse at once, changing nothing, while the engine cannot be reached."""
        deps = self.deps
        if deps.observed.fresh and deps.host.prepared:
            return
        deps.runtime.ping()
        deps.networks.prepare()
