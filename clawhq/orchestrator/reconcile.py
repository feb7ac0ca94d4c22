"""Reconciliation, decided: desired state (database) against observed state (engine).

:func:`plan` is pure: it looks at snapshots and returns the actions that converge them, so
every rule here is testable without an engine or a database. The supervisor executes the
actions, and each action re-checks the agent under its lock before it acts, because the
snapshot may be stale by then.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

from clawhq.runtime import Container
from clawhq.status import AgentStatus, DesiredState

S = AgentStatus
D = DesiredState

#: States in which a start is under way and someone should be waiting for health.
STARTING = frozenset({S.DEPLOYING, S.RESTARTING})
#: How long a start may look stalled before it counts as abandoned: another ClawHQ process
#: may be between creating and starting the container.
START_GRACE = timedelta(seconds=15)


class ActionKind(StrEnum):
    REMOVE_CONTAINER = "remove_container"  # orphan, duplicate, or left over by a failed start
    ADOPT = "adopt"  # a container created just before a crash, never recorded
    WATCH = "watch"  # a start under way that no waiter in this process follows
    CRASHED = "crashed"  # should run but its container is gone or not running
    RESTART = "restart"  # its restart backoff is over
    STOP = "stop"  # should be stopped but runs
    MARK_STOPPED = "mark_stopped"  # a stop that was interrupted; the container is down
    FINISH_DELETE = "finish_delete"  # a delete that was interrupted
    RELEASE_LEASE = "release_lease"  # a port held with no container to use it
    REPAIR_LEASE = "repair_lease"  # a container publishes a port its agent has no lease for


@dataclass(frozen=True)
class AgentView:
    """What the database says about one agent, at one moment."""

    id: str
    status: AgentStatus
    desired: DesiredState
    container_id: str | None
    container_port: int | None
    next_restart_at: datetime | None
    leased_port: int | None
    status_changed_at: datetime | None = None


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    agent_id: str | None = None
    container_id: str | None = None
    port: int | None = None


def plan(
    agents: Iterable[AgentView],
    containers: Iterable[Container],
    now: datetime,
    watched: Collection[str] = (),
) -> list[Action]:
    """The actions that bring the engine and the database in line.

    ``watched`` holds the ids of agents whose start a waiter in this process already follows.
    """
    by_agent: dict[str, list[Container]] = defaultdict(list)
    for container in containers:
        by_agent[container.agent_id or ""].append(container)
    known = {agent.id: agent for agent in agents}
    actions: list[Action] = []

    for agent_id, found in by_agent.items():
        if agent_id not in known:
            actions += [Action(ActionKind.REMOVE_CONTAINER, agent_id or None, c.id) for c in found]

    for agent in known.values():
        actions += _plan_agent(agent, by_agent.get(agent.id, []), now, agent.id in watched)
    return actions


class _Act(Protocol):
    def __call__(
        self, kind: ActionKind, container: Container | None = None, port: int | None = None
    ) -> Action: ...


def _plan_agent(
    agent: AgentView, found: list[Container], now: datetime, watched: bool
) -> list[Action]:
    def act(
        kind: ActionKind, container: Container | None = None, port: int | None = None
    ) -> Action:
        return Action(kind, agent.id, container.id if container else None, port)

    if agent.desired is D.DELETED:
        return [act(ActionKind.FINISH_DELETE)]

    recorded = next((c for c in found if c.id == agent.container_id), None)
    extras = [c for c in found if c is not recorded]
    actions: list[Action] = []
    if (
        recorded is None
        and agent.container_id is None
        and len(extras) == 1
        and (agent.status in STARTING and agent.desired is D.RUNNING)
    ):
        recorded = extras.pop()  # created, then the process died before it was recorded
        actions.append(act(ActionKind.ADOPT, recorded))
    actions += [act(ActionKind.REMOVE_CONTAINER, c) for c in extras]

    if agent.desired is D.RUNNING:
        actions += _plan_running(agent, recorded, now, watched, act)
    else:
        actions += _plan_stopped(agent, recorded, act)

    if recorded is not None and agent.leased_port is None and recorded.ports:
        actions.append(act(ActionKind.REPAIR_LEASE, recorded, recorded.ports[0].host_port))
    if (
        recorded is None
        and agent.leased_port is not None
        and agent.status not in STARTING
        and not (agent.desired is D.RUNNING and agent.status in (S.RUNNING, S.UNHEALTHY))
    ):
        actions.append(act(ActionKind.RELEASE_LEASE))
    return actions


def _plan_running(
    agent: AgentView, recorded: Container | None, now: datetime, watched: bool, act: _Act
) -> list[Action]:
    due = agent.next_restart_at is not None and agent.next_restart_at <= now
    if agent.status is S.RESTARTING and agent.next_restart_at is not None:
        return [act(ActionKind.RESTART)] if due else []  # waiting out its backoff
    if agent.status is S.UNHEALTHY and due:
        return [act(ActionKind.RESTART)]
    if recorded is not None and recorded.is_running:
        if agent.status in STARTING and not watched:
            return [act(ActionKind.WATCH, recorded)]
        return []
    # No container, or one that does not run.
    if agent.status in (S.RUNNING, S.UNHEALTHY):
        return [act(ActionKind.CRASHED, recorded)]
    stalled = agent.status_changed_at is None or now - agent.status_changed_at >= START_GRACE
    if agent.status in STARTING and not watched and stalled:
        return [act(ActionKind.CRASHED, recorded)]
    return []


def _plan_stopped(agent: AgentView, recorded: Container | None, act: _Act) -> list[Action]:
    if agent.status is S.ERROR:
        return [act(ActionKind.REMOVE_CONTAINER, recorded)] if recorded else []
    if recorded is not None and recorded.is_running:
        return [act(ActionKind.STOP, recorded)]
    if agent.status is not S.STOPPED:
        return [act(ActionKind.MARK_STOPPED, recorded)]
    return []


def backoff_delay(step: int, initial: float, maximum: float) -> float:
    """CrashLoopBackOff: ``initial`` doubling with each step, capped at ``maximum``."""
    if step <= 0:
        return 0.0
    return float(min(initial * 2 ** (step - 1), maximum))
