"""What to do about one agent, decided: desired state (database) against observed state.

:func:`plan` is pure: it looks at the agent's row, the containers the engine has for it, the
latest health probe of its current start and the time, and returns the actions that move the
engine and the row towards what the owner asked for. Every rule of the lifecycle is here —
deploy, start, stop, delete, the wait for a healthy answer, crashes, probes, backoff, leases,
adoption after a crash of ClawHQ, drift — so each one is testable without an engine or a
database (tests/unit/test_planner.py). :mod:`~clawhq.controller.sync` carries the actions out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from clawhq.controller.probes import ProbeResult
from clawhq.controller.spec import ATTEMPT_LABEL
from clawhq.runtime import Container, ContainerState, labels
from clawhq.status import AgentStatus, DesiredState

S = AgentStatus
D = DesiredState
_Act = Callable[..., "Action"]

#: How long a start may look stalled (no container yet) before it counts as lost: another
#: ClawHQ process may be between recording the start and creating the container.
START_GRACE = timedelta(seconds=15)
#: How often a start under way is looked at again even when no event says anything: an
#: event can come before the engine's own view of the container has changed.
START_RECHECK_SECONDS = 2.0


class Do(StrEnum):
    CREATE = "create"  # a new container from the current spec, then start it
    START = "start"  # start the agent's existing container
    RESTART = "restart"  # the backoff is over: stop it if needed, start it again
    ADOPT = "adopt"  # a container created just before a crash, never recorded
    REMOVE = "remove"  # a container that is not the agent's, or left by a failed start
    MARK_RUNNING = "mark_running"  # the start answered healthy
    FAIL_START = "fail_start"  # the start failed: its container exited, vanished or timed out
    CRASHED = "crashed"  # should run, but its container is gone or not running
    UNHEALTHY = "unhealthy"  # too many failed probes in a row
    RECOVERED = "recovered"  # probes pass again
    HEALTHY = "healthy"  # a probe passed
    STOP = "stop"  # should be stopped but runs
    MARK_STOPPED = "mark_stopped"  # its container is down: the agent is stopped
    FINISH_DELETE = "finish_delete"  # remove everything of a deleted agent
    RELEASE_LEASE = "release_lease"  # a port held with no container to use it
    REPAIR_LEASE = "repair_lease"  # a container publishes a port its agent has no lease for
    WAIT = "wait"  # nothing to do yet: look again in ``after`` seconds


class StartKind(StrEnum):
    """What kind of start an action makes (the deploy-duration metric's ``kind`` label)."""

    DEPLOY = "deploy"  # the owner's deploy: a new container
    START = "start"  # the owner's start
    RESTART = "restart"  # the supervisor's, after a crash or failed probes
    RESUMED = "resumed"  # a start found half done (created, never started: a crash of
    # ClawHQ) carried on; not a new start, so no new attempt begins


def is_starting(status: AgentStatus, next_restart_at: datetime | None) -> bool:
    """A start is under way: one the owner asked for, or a restart not waiting any more."""
    return status is S.DEPLOYING or (status is S.RESTARTING and next_restart_at is None)


@dataclass(frozen=True)
class Rules:
    """The settings the planner needs."""

    failure_threshold: int = 3
    #: How long a stopped agent keeps its container and port (None: for ever).
    lease_release_after: timedelta | None = None


@dataclass(frozen=True)
class AgentView:
    """What the database says about one agent, at one moment."""

    id: str
    status: AgentStatus
    desired: DesiredState
    generation: int = 0
    handled_generation: int = 0
    recreate_generation: int = 0
    start_generation: int = 0
    container_id: str | None = None
    leased_port: int | None = None
    next_restart_at: datetime | None = None
    start_deadline_at: datetime | None = None
    status_changed_at: datetime | None = None
    in_rollout: bool = False
    #: The hash of the container the agent should have now (its spec).
    intended_hash: str = ""
    #: The image id the agent's image reference resolves to now ("" when not known).
    intended_image_id: str = ""
    #: Whether this process made the start under way (False: a ClawHQ that died did).
    followed: bool = True
    #: When the start under way began (None: not known; the status change is used).
    start_began_at: datetime | None = None
    #: Whether the container's LLM token is still valid (a stop revokes it: the next start
    #: makes a new container with a new one).
    has_llm_token: bool = True

    @property
    def op_pending(self) -> bool:
        """An operation asked for something the controller has not acted on yet."""
        return self.generation > self.handled_generation

    @property
    def starting(self) -> bool:
        """A start is under way: someone should wait for its healthy answer."""
        return is_starting(self.status, self.next_restart_at)


@dataclass(frozen=True)
class Action:
    do: Do
    agent_id: str | None
    container: Container | None = None
    #: The kind of start (``CREATE``, ``START``, ``RESTART``).
    kind: StartKind | None = None
    reason: str = ""
    #: Failed probes in a row (``UNHEALTHY``).
    failures: int = 0
    #: The start had no healthy answer in time (``FAIL_START``).
    timed_out: bool = False
    port: int | None = None
    after: float | None = None

    @property
    def container_id(self) -> str | None:
        return self.container.id if self.container else None


def up_to_date(agent: AgentView, container: Container) -> bool:
    """Whether the container was made from the agent's current spec (and image)."""
    if container.labels.get(labels.CONFIG_HASH) != agent.intended_hash:
        return False
    image_id = getattr(container, "image_id", "")
    return not (agent.intended_image_id and image_id and image_id != agent.intended_image_id)


def plan(
    agent: AgentView | None,
    found: Sequence[Container],
    probe: ProbeResult | None,
    now: datetime,
    rules: Rules = Rules(),
) -> list[Action]:
    """The actions that bring one agent's containers and row in line.

    ``agent`` None: no row holds these containers (``found``), so they are strays.
    ``probe`` is the latest health probe of the agent's current start, if any.
    """
    if agent is None:
        return [Action(Do.REMOVE, c.agent_id, c) for c in found]
    if agent.desired is D.DELETED:
        return [Action(Do.FINISH_DELETE, agent.id)]

    def act(do: Do, container: Container | None = None, **more: Any) -> Action:
        return Action(do, agent.id, container, **more)

    recorded = next((c for c in found if c.id == agent.container_id), None)
    extras = [c for c in found if c is not recorded]
    actions: list[Action] = []
    if recorded is None and agent.container_id is None and agent.starting:
        attempt = str(agent.start_generation)
        mine = [c for c in extras if c.labels.get(ATTEMPT_LABEL, attempt) == attempt]
        if len(mine) == 1:  # created, then the process died before it was recorded
            recorded = mine[0]
            extras.remove(recorded)
            actions.append(act(Do.ADOPT, recorded))
    actions += [act(Do.REMOVE, c) for c in extras]

    if agent.desired is D.RUNNING:
        actions += _plan_running(agent, recorded, probe, now, rules, act)
    else:
        actions += _plan_stopped(agent, recorded, now, rules, act)
        giving_back = agent.status is S.STOPPED and recorded is not None
        if giving_back and any(a.do is Do.REMOVE and a.container is recorded for a in actions):
            recorded = None  # a stopped agent giving back its port: the lease goes too

    if recorded is not None and agent.leased_port is None and recorded.ports:
        actions.append(act(Do.REPAIR_LEASE, recorded, port=recorded.ports[0].host_port))
    if (
        recorded is None
        and agent.leased_port is not None
        and not agent.op_pending
        and not agent.starting
        and agent.status not in (S.RUNNING, S.UNHEALTHY, S.RESTARTING)
        and not (agent.in_rollout and agent.status is S.ERROR)
        and not any(a.do in (Do.CREATE, Do.START) for a in actions)
    ):
        actions.append(act(Do.RELEASE_LEASE))
    return actions


def _plan_running(
    agent: AgentView,
    recorded: Container | None,
    probe: ProbeResult | None,
    now: datetime,
    rules: Rules,
    act: _Act,
) -> list[Action]:
    if agent.op_pending:
        if agent.recreate_generation > agent.handled_generation:
            return [act(Do.CREATE, kind=StartKind.DEPLOY)]
        if agent.status in (S.STOPPED, S.ERROR, S.RESTARTING, S.STOPPING):
            # A start. A stopped agent picks up the current spec as it starts.
            if recorded is not None and up_to_date(agent, recorded) and agent.has_llm_token:
                return [act(Do.START, recorded, kind=StartKind.START)]
            return [act(Do.CREATE, kind=StartKind.START)]
    if agent.status is S.ERROR:
        return [act(Do.REMOVE, recorded)] if recorded is not None else []
    if agent.status in (S.STOPPED, S.STOPPING):
        return []
    if agent.starting:
        return _plan_starting(agent, recorded, probe, now, act)
    if agent.status is S.RESTARTING:  # waiting out its backoff
        if agent.next_restart_at is not None and agent.next_restart_at > now:
            return [act(Do.WAIT, after=_seconds(agent.next_restart_at - now))]
        if recorded is None:
            return [act(Do.CREATE, kind=StartKind.RESTART)]
        return [act(Do.RESTART, recorded, kind=StartKind.RESTART)]
    # RUNNING or UNHEALTHY
    if recorded is None or not recorded.is_running:
        return [act(Do.CRASHED, recorded)]
    if agent.status is S.UNHEALTHY:
        if probe is not None and probe.healthy:
            return [act(Do.RECOVERED)]
        if agent.next_restart_at is not None:
            if agent.next_restart_at <= now:
                return [act(Do.RESTART, recorded, kind=StartKind.RESTART)]
            return [act(Do.WAIT, after=_seconds(agent.next_restart_at - now))]
        return []
    if probe is not None:
        if probe.healthy:
            return [act(Do.HEALTHY)]
        if probe.failures >= rules.failure_threshold:
            return [act(Do.UNHEALTHY, failures=probe.failures)]
    return []


def _plan_starting(
    agent: AgentView,
    recorded: Container | None,
    probe: ProbeResult | None,
    now: datetime,
    act: _Act,
) -> list[Action]:
    # A start nobody here follows was begun by a ClawHQ that died (or by another process that
    # may still be creating the container): once the grace is over, it is treated as a crash
    # and restarted, so a SIGKILL mid-deploy still ends with the agent running.
    # Within the grace, a container that is missing or down may be that other process's
    # restart between its stop and its start: wait, do not judge.
    down = recorded is None or recorded.state not in (
        ContainerState.CREATED,
        ContainerState.RUNNING,
    )
    began = agent.start_began_at or agent.status_changed_at
    if not agent.followed and down and began is not None and now - began < START_GRACE:
        return [act(Do.WAIT, after=_seconds(began + START_GRACE - now))]
    if recorded is None:
        if not agent.followed:
            return [act(Do.CRASHED)]
        return [act(Do.FAIL_START, reason="the agent's container disappeared")]
    if recorded.state is ContainerState.CREATED:
        return [act(Do.START, recorded, kind=StartKind.RESUMED)]  # created, never started: a crash
    if not recorded.is_running:
        return [act(Do.FAIL_START if agent.followed else Do.CRASHED, recorded)]
    if probe is not None and probe.healthy:
        return [act(Do.MARK_RUNNING)]
    deadline = agent.start_deadline_at
    if deadline is not None and deadline <= now:
        return [act(Do.FAIL_START, recorded, timed_out=True)]
    after = START_RECHECK_SECONDS
    if deadline is not None:
        after = min(after, _seconds(deadline - now))
    return [act(Do.WAIT, after=after)]


def _plan_stopped(
    agent: AgentView, recorded: Container | None, now: datetime, rules: Rules, act: _Act
) -> list[Action]:
    if agent.status is S.ERROR and not agent.op_pending:
        return [act(Do.REMOVE, recorded)] if recorded is not None else []
    if recorded is not None and recorded.is_running:
        return [act(Do.STOP, recorded)]
    if agent.status is not S.STOPPED:
        return [act(Do.MARK_STOPPED, recorded)]
    # Stopped for long, it gives its port back to the shared pool: the container goes (the
    # workspace stays), and its next start makes a new one on a new port.
    since = agent.status_changed_at
    if (
        recorded is not None
        and agent.leased_port is not None
        and rules.lease_release_after is not None
        and since is not None
        and not agent.op_pending
    ):
        due = since + rules.lease_release_after
        if due <= now:
            return [act(Do.REMOVE, recorded)]
        return [act(Do.WAIT, after=_seconds(due - now))]
    return []


def _seconds(delta: timedelta) -> float:
    return max(delta.total_seconds(), 0.0)


def backoff_delay(step: int, initial: float, maximum: float) -> float:
    """CrashLoopBackOff: ``initial`` doubling with each step, capped at ``maximum``."""
    if step <= 0:
        return 0.0
    return float(min(initial * 2 ** (step - 1), maximum))
