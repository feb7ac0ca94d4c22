"""The controller end to end over FakeRuntime, a manual clock and a probe the test answers.

Nothing runs in the background (``threads=False``): operations run the controller inline,
and the tests drive the rest — engine events (``enqueue``), time (``clock.advance``), probes
and timers (``run_pending``), full resyncs — so every scenario is deterministic and sleeps
nowhere. Each one runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import select

from clawhq.context import AppContext, build_context
from clawhq.controller import probes
from clawhq.controller.planner import START_GRACE
from clawhq.credentials import hash_token
from clawhq.crypto import generate_key
from clawhq.db.models import Agent, PortLease
from clawhq.runtime import ContainerState
from clawhq.services import agents, users
from clawhq.settings import Settings
from clawhq.status import AgentStatus as S
from tests.conftest import TEST_IMAGE, handed_secrets
from tests.doubles.clock import ManualClock
from tests.doubles.runtime import FakeRuntime

HEALTH_INTERVAL = 30.0
BACKOFF = 10.0  # CLAWHQ_RESTART_BACKOFF_INITIAL's default
START_TIMEOUT = 20.0  # make_settings'


class Probe:
    """The health probe: answers what the test says, and counts its calls."""

    def __init__(self) -> None:
        self.healthy = True
        self.calls = 0

    def __call__(self, url: str) -> bool:
        self.calls += 1
        return self.healthy


class World:
    """One ClawHQ "process": a context over the shared database and the shared fake engine."""

    def __init__(
        self, context: AppContext, clock: ManualClock, probe: Probe, fake: FakeRuntime
    ) -> None:
        self.context, self.clock, self.probe, self.fake = context, clock, probe, fake
        self.controller = context.controller

    def settle(self, seconds: float = 0.0, step: float = 0.5) -> None:
        """Let ``seconds`` pass (in steps, so each timer fires in turn), working through
        everything that falls due."""
        self.controller.run_pending()
        while seconds > 0:
            self.clock.advance(min(seconds, step))
            seconds -= step
            self.controller.run_pending()

    def state(self, agent_id: str) -> tuple[S, int, str | None]:
        row = self.agent(agent_id)
        return row.status, row.restart_count, row.container_id

    def crash(self, container_id: str, agent_id: str) -> None:
        self.fake.crash(container_id, exit_code=137)
        self.controller.enqueue(agent_id)  # what the event stream would do
        self.controller.run_pending()

    def row(self, agent_id: str) -> Agent | None:
        with self.context.sessions() as session:
            return session.get(Agent, agent_id)

    def agent(self, agent_id: str) -> Agent:
        found = self.row(agent_id)
        assert found is not None
        return found

    def drift(self, agent_id: str) -> tuple[bool, list[str]]:
        """What the API shows as ``upToDate`` and what differs, for the agent's row now."""
        with self.context.sessions() as session:
            agent = session.get(Agent, agent_id)
            assert agent is not None
            return self.context.views.drift(agents.row_of(agent, None))

    def leases(self, agent_id: str) -> list[int]:
        with self.context.sessions() as session:
            return list(
                session.scalars(select(PortLease.port).where(PortLease.agent_id == agent_id))
            )


@pytest.fixture(autouse=True)
def no_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Liveness probes exactly every ``HEALTH_INTERVAL`` (the prober jitters them ±10%)."""
    monkeypatch.setattr(probes, "random", SimpleNamespace(uniform=lambda low, high: 1.0))


@pytest.fixture
def fake() -> FakeRuntime:
    return FakeRuntime(images={TEST_IMAGE})


@pytest.fixture
def world_factory(
    make_settings: Callable[..., Settings], fake: FakeRuntime
) -> Iterator[Callable[..., World]]:
    """Worlds sharing one database, encryption key, engine and clock; each with its probe."""
    key, clock = generate_key(), ManualClock()
    contexts: list[AppContext] = []

    def make(**overrides: Any) -> World:
        values: dict[str, Any] = {
            "supervise": True,
            "encryption_key": key,
            "health_interval": HEALTH_INTERVAL,
            "stats_interval": 0,
        }
        values.update(overrides)
        probe = Probe()
        context = build_context(
            make_settings(**values), runtime=fake, probe=probe, clock=clock, threads=False
        )
        contexts.append(context)
        return World(context, clock, probe, fake)

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def world(world_factory: Callable[..., World]) -> World:
    return world_factory()


def new_agent(world: World) -> str:
    context = world.context
    with context.sessions() as session:
        user = users.create_user(session, f"u{uuid.uuid4().hex[:10]}@example.com", plan="pro")
        session.commit()
        agent = agents.create_agent(
            session, context.keyring, user, agents.NewAgent(name="a", api_key="sk-test-0123456789")
        )
        return agent.id


def deploy_running(world: World) -> tuple[str, str]:
    """A new agent, deployed and answering healthy: (agent id, container id)."""
    agent_id = new_agent(world)
    assert world.context.operations.deploy(agent_id).status is S.DEPLOYING
    world.settle(0.5)
    row = world.agent(agent_id)
    assert row.status is S.RUNNING, row.last_error
    assert row.container_id is not None
    return agent_id, row.container_id


# -- deploy, crash, restart ------------------------------------------------------------------


def test_deploy_runs_once_healthy(world: World, fake: FakeRuntime) -> None:
    agent_id = new_agent(world)
    world.probe.healthy = False
    assert world.context.operations.deploy(agent_id).status is S.DEPLOYING
    row = world.agent(agent_id)
    assert row.container_id in fake.containers
    assert fake.containers[row.container_id].state is ContainerState.RUNNING
    assert row.start_deadline_at == world.clock.now() + timedelta(seconds=START_TIMEOUT)
    world.settle(1.0)
    assert world.agent(agent_id).status is S.DEPLOYING  # no healthy answer yet
    assert world.probe.calls > 0
    world.probe.healthy = True
    world.settle(0.5)
    row = world.agent(agent_id)
    assert (row.status, row.last_error, row.start_deadline_at) == (S.RUNNING, None, None)
    assert row.restart_count == 0
    assert list(fake.containers) == [row.container_id]
    assert world.leases(agent_id) == [row.container_port]


def test_crash_restarts_after_the_backoff_then_doubles_it(world: World, fake: FakeRuntime) -> None:
    agent_id, container_id = deploy_running(world)
    crashed_at = world.clock.now()
    world.crash(container_id, agent_id)
    row = world.agent(agent_id)
    assert (row.status, row.restart_count, row.last_exit_code) == (S.RESTARTING, 0, 137)
    assert row.next_restart_at == crashed_at + timedelta(seconds=BACKOFF)
    assert "exited with code 137" in (row.last_error or "")
    world.settle(BACKOFF - 0.5)
    assert world.agent(agent_id).status is S.RESTARTING  # still waiting
    assert fake.containers[container_id].state is ContainerState.EXITED
    world.settle(0.5)  # the backoff is over: restarted in the same container
    assert world.state(agent_id) == (S.RESTARTING, 1, container_id)
    assert fake.containers[container_id].state is ContainerState.RUNNING
    world.settle(0.5)
    assert world.state(agent_id) == (S.RUNNING, 1, container_id)
    assert world.agent(agent_id).next_restart_at is None
    assert list(fake.containers) == [container_id]
    # A second crash waits twice as long.
    crashed_at = world.clock.now()
    world.crash(container_id, agent_id)
    row = world.agent(agent_id)
    assert row.status is S.RESTARTING
    assert row.next_restart_at == crashed_at + timedelta(seconds=2 * BACKOFF)
    world.settle(2 * BACKOFF + 0.5)
    assert world.state(agent_id) == (S.RUNNING, 2, container_id)


def test_a_die_event_is_believed_while_the_engine_still_lists_the_container_running(
    world: World, fake: FakeRuntime
) -> None:
    """Docker's list endpoint lags its own ``die`` event (measured on 20.10: 15 kills out of
    15 under load); the sync an event causes inspects the container it names."""
    agent_id, container_id = deploy_running(world)
    fake.list_lags = True
    fake.crash(container_id, exit_code=137)
    assert fake.list_managed()[0].state is ContainerState.RUNNING  # what a listing says now
    world.context.sources.on_event(agent_id, container_id)  # what the event stream does
    world.controller.run_pending()
    row = world.agent(agent_id)
    assert (row.status, row.last_exit_code) == (S.RESTARTING, 137)


def test_a_restart_the_engine_cannot_take_while_it_comes_back_waits_for_it(
    world: World, fake: FakeRuntime
) -> None:
    """After dockerd restarts it answers before it can do everything (its volume store still
    loading): a start failing then is the engine's failure, not the agent's."""
    from clawhq.controller.failures import ENGINE_RETRY_SECONDS
    from clawhq.errors import EngineError

    agent_id, container_id = deploy_running(world)
    fake.reachable = False
    world.context.sources.resync()  # the engine is gone
    fake.reachable = True
    world.crash(container_id, agent_id)  # its containers died with it
    fake.fail["start"] = EngineError("inspect volume clawhq-workspace-x: get clawhq-workspace-x")
    world.context.sources.resync()  # back, but not ready for everything yet
    steps_before = world.agent(agent_id).backoff_step
    world.settle(BACKOFF + 0.5)
    row = world.agent(agent_id)
    assert row.status is S.RESTARTING
    assert (row.restart_count, row.backoff_step) == (0, steps_before)  # nothing burnt
    assert "waiting for the container engine" in (row.last_error or "")
    del fake.fail["start"]
    world.settle(ENGINE_RETRY_SECONDS + 1)
    assert world.state(agent_id) == (S.RUNNING, 1, container_id)


def test_a_start_the_settled_engine_refuses_is_the_agents_failure(
    world: World, fake: FakeRuntime
) -> None:
    from clawhq.errors import EngineError

    agent_id, container_id = deploy_running(world)
    world.crash(container_id, agent_id)
    fake.fail["start"] = EngineError("something the agent's container cannot do")
    world.settle(BACKOFF + 0.5)
    row = world.agent(agent_id)
    assert row.status is S.RESTARTING
    assert row.backoff_step == 2  # backed off again: this one counts
    assert "restart failed" in (row.last_error or "")


def test_a_crash_during_a_restart_backs_off_again(world: World, fake: FakeRuntime) -> None:
    agent_id, container_id = deploy_running(world)
    world.crash(container_id, agent_id)
    world.probe.healthy = False
    world.settle(BACKOFF)
    assert world.state(agent_id) == (S.RESTARTING, 1, container_id)
    world.crash(container_id, agent_id)  # before it answered healthy
    row = world.agent(agent_id)
    assert (row.status, row.restart_count) == (S.RESTARTING, 1)
    assert row.next_restart_at == world.clock.now() + timedelta(seconds=2 * BACKOFF)
    world.probe.healthy = True
    world.settle(2 * BACKOFF + 0.5)
    assert world.state(agent_id) == (S.RUNNING, 2, container_id)


def test_a_steady_agent_starts_its_backoff_over(world: World) -> None:
    agent_id, container_id = deploy_running(world)
    world.crash(container_id, agent_id)
    world.settle(BACKOFF + 0.5)
    assert world.state(agent_id) == (S.RUNNING, 1, container_id)
    world.settle(world.context.settings.restart_backoff_reset + HEALTH_INTERVAL, step=5)
    world.crash(container_id, agent_id)  # healthy long enough: back to the first delay
    row = world.agent(agent_id)
    assert row.next_restart_at == world.clock.now() + timedelta(seconds=BACKOFF)


def test_a_start_that_never_answers_ends_in_error(world: World, fake: FakeRuntime) -> None:
    agent_id = new_agent(world)
    world.probe.healthy = False
    world.context.operations.deploy(agent_id)
    world.settle(START_TIMEOUT - 1)
    assert world.agent(agent_id).status is S.DEPLOYING
    world.settle(1.5)
    row = world.agent(agent_id)
    assert row.status is S.ERROR
    assert f"no healthy answer on /healthz within {START_TIMEOUT:g}s" in (row.last_error or "")
    assert (row.container_id, row.container_port) == (None, None)
    assert fake.containers == {}
    assert world.leases(agent_id) == []
    world.context.sources.resync()
    world.settle(HEALTH_INTERVAL * 2)
    assert world.agent(agent_id).status is S.ERROR  # an owner's failed start stays failed


def fail_probes(world: World, agent_id: str) -> None:
    """Liveness probes fail until the agent is UNHEALTHY."""
    world.probe.healthy = False
    for _ in range(world.context.settings.health_failure_threshold):
        assert world.agent(agent_id).status is S.RUNNING
        world.settle(HEALTH_INTERVAL)  # one liveness probe
    assert world.agent(agent_id).status is S.UNHEALTHY


def test_failed_probes_make_it_unhealthy_then_restart_it(world: World, fake: FakeRuntime) -> None:
    agent_id, container_id = deploy_running(world)
    fail_probes(world, agent_id)
    row = world.agent(agent_id)
    threshold = world.context.settings.health_failure_threshold
    assert f"failed {threshold} health checks" in (row.last_error or "")
    assert row.next_restart_at == row.status_changed_at + timedelta(seconds=BACKOFF)
    assert row.restart_count == 0
    world.settle(BACKOFF - 0.5)
    assert world.agent(agent_id).status is S.UNHEALTHY
    for _ in range(int(HEALTH_INTERVAL * 2)):  # the backoff is over: restarted (see below)
        world.settle(0.5)
        if world.agent(agent_id).status is not S.UNHEALTHY:
            break
    assert world.state(agent_id) == (S.RESTARTING, 1, container_id)
    assert world.agent(agent_id).next_restart_at is None  # under way, not waiting
    world.probe.healthy = True
    world.settle(0.5)
    assert world.state(agent_id) == (S.RUNNING, 1, container_id)
    assert fake.containers[container_id].state is ContainerState.RUNNING


def test_an_unhealthy_agent_restarts_when_its_backoff_is_over(world: World) -> None:
    agent_id, _ = deploy_running(world)
    fail_probes(world, agent_id)
    world.settle(BACKOFF + 0.5)  # well before the next liveness probe
    row = world.agent(agent_id)
    assert (row.status, row.restart_count) == (S.RESTARTING, 1)


def test_an_unhealthy_agent_that_answers_again_recovers(
    world_factory: Callable[..., World],
) -> None:
    world = world_factory(restart_backoff_initial=HEALTH_INTERVAL * 1.5)
    agent_id, container_id = deploy_running(world)
    fail_probes(world, agent_id)
    world.probe.healthy = True
    world.settle(HEALTH_INTERVAL)  # the next probe, before the backoff is over
    assert world.state(agent_id) == (S.RUNNING, 0, container_id)
    assert world.agent(agent_id).next_restart_at is None


# -- stop, start, delete -----------------------------------------------------------------------


def test_stop_is_kept_revokes_the_llm_token_and_start_makes_a_new_container(
    world: World, fake: FakeRuntime
) -> None:
    agent_id, container_id = deploy_running(world)
    first_token = handed_secrets(fake, container_id)["CLAWHQ_API_KEY"]
    assert world.agent(agent_id).llm_token_hash == hash_token(first_token)
    stopped = world.context.operations.stop(agent_id)
    assert stopped.status is S.STOPPED
    assert world.agent(agent_id).llm_token_hash is None  # revoked with the stop, at once
    assert fake.containers[container_id].state is ContainerState.EXITED
    for _ in range(3):  # resyncs, probes, timers: nothing undoes the owner's stop
        world.context.sources.resync()
        world.settle(HEALTH_INTERVAL)
    assert world.state(agent_id) == (S.STOPPED, 0, container_id)
    assert fake.containers[container_id].state is ContainerState.EXITED  # its logs stay
    assert world.context.operations.start(agent_id).status is S.DEPLOYING
    world.settle(0.5)
    status, _, new_id = world.state(agent_id)
    assert status is S.RUNNING and new_id != container_id
    assert list(fake.containers) == [new_id]
    new_token = handed_secrets(fake, new_id)["CLAWHQ_API_KEY"]
    assert new_token != first_token
    assert world.agent(agent_id).llm_token_hash == hash_token(new_token)


def test_start_while_a_stop_is_under_way_is_taken_and_the_agent_runs_again(
    world: World, fake: FakeRuntime
) -> None:
    """The owner clicks stop, then start: the start is not refused (it used to be 409)."""
    agent_id, container_id = deploy_running(world)
    world.context.operations.stop(agent_id)
    with world.context.sessions.begin() as session:  # as if the stop step were still running
        row = session.get(Agent, agent_id)
        assert row is not None
        row.status = S.STOPPING
    assert world.context.operations.start(agent_id).status is S.DEPLOYING
    world.settle(0.5)
    status, _, new_id = world.state(agent_id)
    assert status is S.RUNNING and new_id != container_id
    assert world.agent(agent_id).desired_state == "RUNNING"
    assert list(fake.containers) == [new_id]


def test_a_long_stopped_agent_gives_its_port_back_and_starts_on_a_new_one(
    world: World, fake: FakeRuntime
) -> None:
    agent_id, container_id = deploy_running(world)
    volumes = set(fake.volumes)
    world.context.operations.stop(agent_id)
    world.settle(23 * 3600, step=3600)
    assert world.leases(agent_id) and container_id in fake.containers  # not yet
    world.settle(2 * 3600, step=3600)
    assert world.leases(agent_id) == [] and container_id not in fake.containers
    assert fake.volumes == volumes  # the workspace stays
    assert world.agent(agent_id).status is S.STOPPED
    assert world.context.operations.start(agent_id).status is S.DEPLOYING
    world.settle(0.5)
    row = world.agent(agent_id)
    assert row.status is S.RUNNING and row.container_id not in (None, container_id)
    assert world.leases(agent_id) == [row.container_port]


@pytest.mark.parametrize("keep", [False, True], ids=["workspace-removed", "workspace-kept"])
def test_delete_removes_container_and_row(world: World, fake: FakeRuntime, keep: bool) -> None:
    agent_id, _ = deploy_running(world)
    volumes = set(fake.volumes)
    world.context.operations.destroy(agent_id, keep_workspace=keep)
    assert world.row(agent_id) is None
    assert fake.containers == {}
    assert fake.volumes == (volumes if keep else set())
    assert world.leases(agent_id) == []
    world.context.sources.resync()
    world.settle(1.0)
    assert fake.containers == {}


# -- two processes on one database -------------------------------------------------------------


@pytest.mark.parametrize("first", [0, 1], ids=["deployer-first", "other-first"])
def test_two_processes_restart_a_crash_once(
    world_factory: Callable[..., World], fake: FakeRuntime, first: int
) -> None:
    one = world_factory()
    two = world_factory()
    agent_id, container_id = deploy_running(one)
    two.context.sources.resync()
    worlds = [one, two] if first == 0 else [two, one]
    for world in worlds:
        world.settle(0)
    fake.crash(container_id, exit_code=137)
    for world in worlds:  # both see the engine's "die" event
        world.controller.enqueue(agent_id)
    for world in worlds:
        world.settle(0)
    row = one.agent(agent_id)
    assert (row.status, row.restart_count) == (S.RESTARTING, 0)
    assert row.next_restart_at is not None
    for _ in range(int(BACKOFF * 2 + 2)):  # one clock: both processes see each step
        one.clock.advance(0.5)
        for world in worlds:
            world.controller.run_pending()
    assert one.state(agent_id) == (S.RUNNING, 1, container_id)
    assert list(fake.containers) == [container_id]
    assert fake.containers[container_id].state is ContainerState.RUNNING


@pytest.mark.parametrize("exited", [False, True], ids=["container-runs", "container-exited"])
def test_a_start_left_by_a_process_that_died_is_finished_by_another(
    world_factory: Callable[..., World], fake: FakeRuntime, exited: bool
) -> None:
    one, two = world_factory(), world_factory()
    agent_id = new_agent(one)
    one.probe.healthy = False
    one.context.operations.deploy(agent_id)  # then ``one`` is gone: never driven again
    container_id = one.agent(agent_id).container_id
    assert container_id is not None
    if exited:
        fake.crash(container_id, exit_code=1)
    two.context.sources.resync()
    two.settle(0.5)
    if exited:  # an abandoned start is a crash: restarted after the backoff, not an ERROR
        assert two.agent(agent_id).status is S.DEPLOYING  # not judged within the grace
        two.settle(START_GRACE.total_seconds())
        row = two.agent(agent_id)
        assert (row.status, row.restart_count) == (S.RESTARTING, 0)
        assert "code 1" in (row.last_error or "")
        two.settle(BACKOFF)
    assert two.state(agent_id) == (S.RUNNING, int(exited), container_id)


# -- drift -------------------------------------------------------------------------------------


def test_drift_is_shown_not_acted_on_until_the_next_start(
    world_factory: Callable[..., World], fake: FakeRuntime
) -> None:
    old = world_factory()
    agent_id, container_id = deploy_running(old)
    new = world_factory(agent_memory="128m")  # the same installation, restarted with new settings
    new.context.sources.resync()
    new.settle(0)
    assert new.drift(agent_id) == (False, ["limits.memory_bytes"])
    for _ in range(3):  # resyncs and probes: drift alone never recreates a running agent
        new.context.sources.resync()
        new.settle(HEALTH_INTERVAL)
    assert new.state(agent_id) == (S.RUNNING, 0, container_id)
    assert list(fake.containers) == [container_id]
    new.context.operations.stop(agent_id)
    new.context.operations.start(agent_id)  # a start picks up the current spec
    new.settle(0.5)
    row = new.agent(agent_id)
    assert row.status is S.RUNNING
    assert row.container_id not in (None, container_id)
    assert list(fake.containers) == [row.container_id]
    assert fake.specs[row.container_id].limits.memory_bytes == 128 * 1024 * 1024
    assert new.drift(agent_id) == (True, [])
