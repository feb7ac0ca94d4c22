"""The reconcile plan, rule by rule: pure data in, actions out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from clawhq.orchestrator.reconcile import Action, ActionKind, AgentView, backoff_delay, plan
from clawhq.runtime import Container, ContainerState, PortBinding, labels
from clawhq.status import AgentStatus, DesiredState

NOW = datetime(2026, 1, 1, tzinfo=UTC)
K = ActionKind


def view(
    status: AgentStatus = AgentStatus.RUNNING,
    desired: DesiredState = DesiredState.RUNNING,
    container_id: str | None = "c1",
    next_restart_at: datetime | None = None,
    leased_port: int | None = 19000,
    agent_id: str = "a1",
) -> AgentView:
    return AgentView(
        agent_id, status, desired, container_id, leased_port, next_restart_at, leased_port
    )


def container(
    cid: str = "c1", agent_id: str | None = "a1", state: ContainerState = ContainerState.RUNNING
) -> Container:
    agent_labels = {labels.SERVICE: labels.SERVICE_AGENT}
    if agent_id:
        agent_labels[labels.AGENT_ID] = agent_id
    return Container(
        id=cid,
        name=f"n-{cid}",
        image="i",
        state=state,
        labels=agent_labels,
        ports=(PortBinding("127.0.0.1", 19000, 18789),),
    )


def kinds(actions: list[Action]) -> list[ActionKind]:
    return [a.kind for a in actions]


def test_a_healthy_running_agent_needs_nothing() -> None:
    assert plan([view()], [container()], NOW) == []


def test_orphans_are_removed() -> None:
    actions = plan([], [container(agent_id="ghost"), container("c2", agent_id=None)], NOW)
    assert [(a.kind, a.container_id) for a in actions] == [
        (K.REMOVE_CONTAINER, "c1"),
        (K.REMOVE_CONTAINER, "c2"),
    ]


def test_duplicates_are_removed_and_the_recorded_one_kept() -> None:
    actions = plan([view()], [container("c1"), container("c2")], NOW)
    assert [(a.kind, a.container_id) for a in actions] == [(K.REMOVE_CONTAINER, "c2")]


def test_a_container_created_just_before_a_crash_is_adopted() -> None:
    agent = view(status=AgentStatus.DEPLOYING, container_id=None)
    actions = plan([agent], [container("c9")], NOW)
    assert kinds(actions) == [K.ADOPT, K.WATCH]
    assert actions[0].container_id == "c9"


@pytest.mark.parametrize(
    "state", [ContainerState.EXITED, ContainerState.DEAD, ContainerState.CREATED]
)
def test_a_dead_container_of_a_running_agent_is_a_crash(state: ContainerState) -> None:
    assert kinds(plan([view()], [container(state=state)], NOW)) == [K.CRASHED]


def test_a_missing_container_of_a_running_agent_is_a_crash() -> None:
    assert kinds(plan([view()], [], NOW)) == [K.CRASHED]


def test_a_stalled_start_counts_as_a_crash_only_after_a_grace() -> None:
    recent = view(status=AgentStatus.DEPLOYING, container_id=None, agent_id="a1")
    recent = AgentView(**{**recent.__dict__, "status_changed_at": NOW - timedelta(seconds=2)})
    assert plan([recent], [], NOW) == []  # another process may be about to create it
    stalled = AgentView(**{**recent.__dict__, "status_changed_at": NOW - timedelta(minutes=1)})
    assert kinds(plan([stalled], [], NOW)) == [K.CRASHED]
    assert plan([stalled], [], NOW, watched={"a1"}) == []


def test_backoff_is_waited_out_then_restarted() -> None:
    waiting = view(status=AgentStatus.RESTARTING, next_restart_at=NOW + timedelta(seconds=5))
    assert plan([waiting], [container(state=ContainerState.EXITED)], NOW) == []
    due = view(status=AgentStatus.RESTARTING, next_restart_at=NOW - timedelta(seconds=1))
    assert kinds(plan([due], [container(state=ContainerState.EXITED)], NOW)) == [K.RESTART]


def test_an_unhealthy_agent_is_restarted_when_due() -> None:
    sick = view(status=AgentStatus.UNHEALTHY, next_restart_at=NOW)
    assert kinds(plan([sick], [container()], NOW)) == [K.RESTART]


def test_a_start_nobody_follows_is_watched() -> None:
    starting = view(status=AgentStatus.DEPLOYING)
    assert kinds(plan([starting], [container()], NOW)) == [K.WATCH]
    assert plan([starting], [container()], NOW, watched={"a1"}) == []


def test_a_users_stop_is_never_undone() -> None:
    stopped = view(status=AgentStatus.STOPPED, desired=DesiredState.STOPPED)
    assert plan([stopped], [container(state=ContainerState.EXITED)], NOW) == []
    # ...and an agent that should be stopped but runs is stopped.
    assert kinds(plan([stopped], [container()], NOW)) == [K.STOP]


def test_an_interrupted_stop_is_finished() -> None:
    stopping = view(status=AgentStatus.STOPPING, desired=DesiredState.STOPPED)
    assert kinds(plan([stopping], [container(state=ContainerState.EXITED)], NOW)) == [
        K.MARK_STOPPED
    ]
    assert kinds(plan([stopping], [container()], NOW)) == [K.STOP]


def test_an_interrupted_delete_is_finished() -> None:
    deleting = view(desired=DesiredState.DELETED)
    assert kinds(plan([deleting], [container()], NOW)) == [K.FINISH_DELETE]


def test_failed_agents_keep_neither_container_nor_port() -> None:
    failed = view(status=AgentStatus.ERROR, desired=DesiredState.STOPPED, container_id="c1")
    assert kinds(plan([failed], [container(state=ContainerState.EXITED)], NOW)) == [
        K.REMOVE_CONTAINER
    ]
    no_container = view(status=AgentStatus.ERROR, desired=DesiredState.STOPPED, container_id=None)
    assert kinds(plan([no_container], [], NOW)) == [K.RELEASE_LEASE]


def test_a_lost_lease_is_repaired_from_the_container() -> None:
    actions = plan([view(leased_port=None)], [container()], NOW)
    assert [(a.kind, a.port) for a in actions] == [(K.REPAIR_LEASE, 19000)]


def test_backoff_doubles_from_ten_seconds_to_five_minutes() -> None:
    assert [backoff_delay(step, 10, 300) for step in range(8)] == [
        0,
        10,
        20,
        40,
        80,
        160,
        300,
        300,
    ]
