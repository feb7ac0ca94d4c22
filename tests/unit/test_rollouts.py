"""The rollout driver over a real database, with a fake controller and a fixed clock."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from clawhq.controller import rollouts
from clawhq.controller.rollout_view import newest, summarize
from clawhq.controller.rollouts import RolloutDriver
from clawhq.db.engine import create_db_engine, make_session_factory
from clawhq.db.models import Agent, Plan, Rollout, RolloutAgent, User
from clawhq.errors import Conflict, InvalidRequest, NotFound
from clawhq.status import AgentStatus, DesiredState

NOW = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
DEFAULT_IMAGE = "clawhq-openclaw:latest"
OLD = "clawhq-openclaw:1"
NEW = "clawhq-openclaw:2"


class FakeController:
    """Stands in for the agent controller: recreates on request, settles agents on demand."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        self.enqueued: list[str] = []
        self.recreates: list[str] = []

    def request_recreate(self, agent: Agent) -> None:
        agent.desired_state = DesiredState.RUNNING
        agent.generation += 1
        agent.recreate_generation = agent.generation
        self.recreates.append(agent.id)

    def enqueue_agent(self, agent_id: str) -> None:
        self.enqueued.append(agent_id)

    @staticmethod
    def image_of(session: Session, agent: Agent, image: str | None = None) -> str:
        if image:
            return image
        plan = session.get(User, agent.user_id).plan  # type: ignore[union-attr]
        return agent.image or plan.image or DEFAULT_IMAGE

    def intended_config(self, session: Session, agent: Agent, image: str | None) -> dict[str, Any]:
        return {"image": self.image_of(session, agent, image), "model": agent.model}

    def driver(self) -> RolloutDriver:
        return RolloutDriver(
            self.sessions,
            request_recreate=self.request_recreate,
            enqueue_agent=self.enqueue_agent,
            intended_config=self.intended_config,
            now=lambda: NOW,
        )

    def settle(self, agent_id: str, outcome: str) -> None:
        """The controller finished the agent's step: ``ok`` (healthy), ``fail`` or ``stopped``."""
        with self.sessions() as session:
            agent = session.get(Agent, agent_id)
            assert agent is not None
            agent.handled_generation = agent.generation
            if outcome == "ok":
                agent.status = AgentStatus.RUNNING
                agent.applied_config = self.intended_config(session, agent, None)
                agent.last_error = None
            elif outcome == "fail":
                agent.status = AgentStatus.ERROR
                agent.last_error = f"no healthy answer from {self.image_of(session, agent)}"
            else:
                agent.status = AgentStatus.STOPPED
                agent.desired_state = DesiredState.STOPPED
            session.commit()


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_db_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


@pytest.fixture
def fake(sessions: sessionmaker[Session]) -> FakeController:
    return FakeController(sessions)


def make_agents(
    sessions: sessionmaker[Session], count: int, *, plan: str = "team", image: str = OLD
) -> list[str]:
    """``count`` running agents of one user, created in order, on ``image``."""
    with sessions() as session:
        user = User(email=f"u{uuid.uuid4().hex[:10]}@example.com", plan_name=plan)
        session.add(user)
        session.flush()
        agents = [
            Agent(
                user_id=user.id,
                name=f"a{i}",
                status=AgentStatus.RUNNING,
                desired_state=DesiredState.RUNNING,
                image=image,
                applied_config={"image": image, "model": "claude-sonnet-4-20250514"},
                created_at=NOW + timedelta(seconds=i),
            )
            for i in range(count)
        ]
        session.add_all(agents)
        session.commit()
        return [a.id for a in agents]


def start(
    sessions: sessionmaker[Session],
    agent_ids: list[str] | None = None,
    *,
    image: str | None = NEW,
    max_unavailable: int = 1,
    max_failures: int = 1,
    **selector: Any,
) -> str:
    with sessions() as session:
        rollout = rollouts.start(
            session,
            selector=selector or {"agents": agent_ids},
            image=image,
            max_unavailable=max_unavailable,
            max_failures=max_failures,
            created_by="admin@example.com",
        )
        session.commit()
        return rollout.id


def members(sessions: sessionmaker[Session], rollout_id: str) -> dict[str, str]:
    with sessions() as session:
        return {m.agent_id: m.state for m in rollouts.members_of(session, rollout_id)}


def in_flight(sessions: sessionmaker[Session], rollout_id: str) -> list[str]:
    return [a for a, s in members(sessions, rollout_id).items() if s in rollouts.IN_FLIGHT]


def rollout_row(sessions: sessionmaker[Session], rollout_id: str) -> Rollout:
    with sessions() as session:
        row = session.get(Rollout, rollout_id)
        assert row is not None
        return row


def agent_row(sessions: sessionmaker[Session], agent_id: str) -> Agent:
    with sessions() as session:
        row = session.get(Agent, agent_id)
        assert row is not None
        return row


def test_success_updates_two_at_a_time_and_completes(sessions, fake) -> None:
    ids = make_agents(sessions, 5)
    rollout_id = start(sessions, ids, max_unavailable=2)
    driver = fake.driver()
    assert driver.sync(rollout_id) == rollouts.FOLLOW_UP_SECONDS
    assert in_flight(sessions, rollout_id) == ids[:2]
    assert fake.enqueued == ids[:2]
    # Level-driven: nothing settled, so a second sync changes nothing.
    driver.sync(rollout_id)
    assert fake.recreates == ids[:2]
    assert agent_row(sessions, ids[0]).rollout_id == rollout_id

    fake.settle(ids[0], "ok")
    driver.sync(rollout_id)
    assert in_flight(sessions, rollout_id) == [ids[1], ids[2]]
    for agent_id in ids[1:3]:
        fake.settle(agent_id, "ok")
    driver.sync(rollout_id)
    assert in_flight(sessions, rollout_id) == ids[3:]
    for agent_id in ids[3:]:
        fake.settle(agent_id, "ok")
    assert driver.sync(rollout_id) is None

    assert set(members(sessions, rollout_id).values()) == {"done"}
    row = rollout_row(sessions, rollout_id)
    assert (row.state, row.finished_at, row.failures) == ("completed", NOW, 0)
    for agent_id in ids:
        agent = agent_row(sessions, agent_id)
        assert (agent.image, agent.rollout_id, agent.applied_config["image"]) == (NEW, None, NEW)
    with sessions() as session:
        view = summarize(session, session.get(Rollout, rollout_id))
    assert (view.progress, view.total, view.counts["done"]) == (100, 5, 5)
    assert [m.previous_image for m in view.members] == [OLD] * 5


def test_a_failure_rolls_back_and_stops_the_rollout(sessions, fake) -> None:
    ids = make_agents(sessions, 3)
    rollout_id = start(sessions, ids, max_failures=1)
    driver = fake.driver()
    driver.sync(rollout_id)
    fake.settle(ids[0], "fail")
    driver.sync(rollout_id)

    assert members(sessions, rollout_id) == {
        ids[0]: "rolling_back",
        ids[1]: "pending",
        ids[2]: "pending",
    }
    agent = agent_row(sessions, ids[0])
    assert (agent.image, agent.rollout_id, agent.generation) == (OLD, rollout_id, 2)
    row = rollout_row(sessions, rollout_id)
    assert (row.state, row.failures, row.finished_at) == ("failed", 1, None)
    assert ids[0] in row.message and "no healthy answer from clawhq-openclaw:2" in row.message
    assert fake.enqueued == [ids[0], ids[0]]

    fake.settle(ids[0], "ok")  # back on its previous image, same agent row (port, workspace)
    assert driver.sync(rollout_id) is None
    row = rollout_row(sessions, rollout_id)
    assert (row.state, row.finished_at) == ("failed", NOW)
    with sessions() as session:
        first = session.get(RolloutAgent, (rollout_id, ids[0]))
        assert first.state == "rolled_back"
        assert first.reason.startswith("rolled back: no healthy answer")
        assert f"pinned to its previous image {OLD}" in first.reason
    assert members(sessions, rollout_id)[ids[1]] == "pending"
    agent = agent_row(sessions, ids[0])
    assert (agent.image, agent.rollout_id, agent.applied_config["image"]) == (OLD, None, OLD)
    for untouched in ids[1:]:
        assert agent_row(sessions, untouched).generation == 0
    assert fake.recreates == [ids[0], ids[0]]


# Each agent's outcomes in order (its update, then its rollback if it failed).
SCENARIOS = {
    "all healthy": (1, 1, [["ok"], ["ok"], ["ok"]], "completed", ["done", "done", "done"]),
    "one failure allowed of two": (
        1,
        2,
        [["ok"], ["fail", "ok"], ["ok"]],
        "completed",
        ["done", "rolled_back", "done"],
    ),
    "second failure stops it": (
        1,
        2,
        [["fail", "ok"], ["fail", "ok"], ["ok"], ["ok"]],
        "failed",
        ["rolled_back", "rolled_back", "pending", "pending"],
    ),
    "the rollback fails too": (
        1,
        1,
        [["fail", "fail"], ["ok"]],
        "failed",
        ["rolled_back", "pending"],
    ),
    "in-flight ones finish after the failure": (
        2,
        1,
        [["fail", "ok"], ["ok"], ["ok"]],
        "failed",
        ["rolled_back", "done", "pending"],
    ),
    "the owner stops one meanwhile": (
        1,
        1,
        [["stopped"], ["ok"]],
        "completed",
        ["skipped", "done"],
    ),
}


@pytest.mark.parametrize(
    ("max_unavailable", "max_failures", "script", "final", "states"),
    list(SCENARIOS.values()),
    ids=list(SCENARIOS),
)
def test_scenarios(sessions, fake, max_unavailable, max_failures, script, final, states) -> None:
    ids = make_agents(sessions, len(script))
    outcomes = {agent_id: list(steps) for agent_id, steps in zip(ids, script, strict=True)}
    rollout_id = start(sessions, ids, max_unavailable=max_unavailable, max_failures=max_failures)
    driver = fake.driver()
    for _ in range(20):
        driver.sync(rollout_id)
        if rollout_row(sessions, rollout_id).finished_at is not None:
            break
        flying = in_flight(sessions, rollout_id)
        assert len(flying) <= max_unavailable
        for agent_id in flying:
            fake.settle(agent_id, outcomes[agent_id].pop(0))
    assert rollout_row(sessions, rollout_id).state == final
    assert [members(sessions, rollout_id)[a] for a in ids] == states
    assert all(agent_row(sessions, a).rollout_id is None for a in ids)


def test_rollback_that_fails_says_so(sessions, fake) -> None:
    ids = make_agents(sessions, 1)
    rollout_id = start(sessions, ids)
    driver = fake.driver()
    driver.sync(rollout_id)
    fake.settle(ids[0], "fail")
    driver.sync(rollout_id)
    fake.settle(ids[0], "fail")
    driver.sync(rollout_id)
    with sessions() as session:
        member = session.get(RolloutAgent, (rollout_id, ids[0]))
        assert member.state == "rolled_back"
        assert "the rollback failed too: no healthy answer from clawhq-openclaw:1" in member.reason


def test_pause_holds_new_members_and_resume_goes_on(sessions, fake) -> None:
    ids = make_agents(sessions, 3)
    rollout_id = start(sessions, ids)
    driver = fake.driver()
    driver.sync(rollout_id)
    with sessions() as session:
        assert rollouts.pause(session, rollout_id).state == "paused"
        session.commit()
    fake.settle(ids[0], "ok")
    assert driver.sync(rollout_id) is None
    assert members(sessions, rollout_id) == {ids[0]: "done", ids[1]: "pending", ids[2]: "pending"}
    assert rollout_row(sessions, rollout_id).finished_at is None
    with sessions() as session:
        assert rollouts.resume(session, rollout_id).state == "running"
        session.commit()
    driver.sync(rollout_id)
    assert in_flight(sessions, rollout_id) == [ids[1]]


def test_abort_skips_pending_and_lets_in_flight_finish(sessions, fake) -> None:
    ids = make_agents(sessions, 3)
    rollout_id = start(sessions, ids)
    driver = fake.driver()
    driver.sync(rollout_id)
    with sessions() as session:
        rollouts.abort(session, rollout_id, NOW)
        session.commit()
    assert members(sessions, rollout_id) == {
        ids[0]: "updating",
        ids[1]: "skipped",
        ids[2]: "skipped",
    }
    row = rollout_row(sessions, rollout_id)
    assert (row.state, row.finished_at) == ("aborted", None)
    with sessions() as session, pytest.raises(Conflict) as refused:
        rollouts.start(
            session,
            selector={"all": True},
            image=NEW,
            max_unavailable=1,
            max_failures=1,
            created_by=None,
        )
    assert refused.value.code == "rollout_in_progress"  # an agent is still in flight
    fake.settle(ids[0], "ok")
    driver.sync(rollout_id)
    row = rollout_row(sessions, rollout_id)
    assert (row.state, row.finished_at) == ("aborted", NOW)
    assert members(sessions, rollout_id)[ids[0]] == "done"
    assert agent_row(sessions, ids[1]).image == OLD
    for action in (rollouts.pause, rollouts.resume):
        with sessions() as session, pytest.raises(Conflict) as refused:
            action(session, rollout_id)
        assert refused.value.code == "invalid_state"


def test_abort_with_nothing_in_flight_finishes_at_once(sessions, fake) -> None:
    ids = make_agents(sessions, 2)
    rollout_id = start(sessions, ids)
    with sessions() as session:
        rollouts.abort(session, rollout_id, NOW)
        session.commit()
    assert rollout_row(sessions, rollout_id).finished_at == NOW
    with sessions() as session, pytest.raises(Conflict) as refused:
        rollouts.abort(session, rollout_id, NOW)
    assert refused.value.code == "invalid_state"


def test_skipped_and_stopped_members(sessions, fake) -> None:
    deleted, stopped, current, gone_later, running = make_agents(sessions, 5)
    rollout_id = start(sessions, [deleted, stopped, current, gone_later, running])
    with sessions() as session:
        session.get(Agent, deleted).desired_state = DesiredState.DELETED
        agent = session.get(Agent, stopped)
        agent.desired_state, agent.status = DesiredState.STOPPED, AgentStatus.STOPPED
        agent = session.get(Agent, current)
        agent.image = NEW
        agent.applied_config = {**agent.applied_config, "image": NEW}
        session.commit()
    driver = fake.driver()
    driver.sync(rollout_id)
    assert in_flight(sessions, rollout_id) == [gone_later]
    with sessions() as session:
        session.get(Agent, gone_later).desired_state = DesiredState.DELETED
        session.commit()
    driver.sync(rollout_id)
    fake.settle(running, "ok")
    driver.sync(rollout_id)

    with sessions() as session:
        found = {m.agent_id: (m.state, m.reason) for m in rollouts.members_of(session, rollout_id)}
    assert found == {
        deleted: ("skipped", "agent deleted before its turn"),
        stopped: ("done", "stopped; picks the new spec up on its next start"),
        current: ("skipped", "already up to date"),
        gone_later: ("skipped", "agent deleted during the rollout"),
        running: ("done", None),
    }
    assert agent_row(sessions, stopped).image == NEW  # its next start picks it up
    assert agent_row(sessions, stopped).generation == 0  # and it was not started
    assert fake.recreates == [gone_later, running]
    assert rollout_row(sessions, rollout_id).state == "completed"


def test_a_rollout_without_image_recreates_only_drifted_agents(sessions, fake) -> None:
    drifted, current = make_agents(sessions, 2)
    with sessions() as session:
        session.get(Agent, drifted).model = "claude-opus-4"  # intended config changed
        session.commit()
    rollout_id = start(sessions, [drifted, current], image=None)
    driver = fake.driver()
    driver.sync(rollout_id)
    assert in_flight(sessions, rollout_id) == [drifted]
    fake.settle(drifted, "ok")
    driver.sync(rollout_id)
    assert members(sessions, rollout_id) == {drifted: "done", current: "skipped"}
    assert agent_row(sessions, drifted).image == OLD  # no image given: the pin is left alone


def test_a_new_driver_continues_after_a_restart(database_url, fake) -> None:
    ids = make_agents(fake.sessions, 3)
    rollout_id = start(fake.sessions, ids, max_unavailable=2)
    fake.driver().sync(rollout_id)
    fake.settle(ids[0], "ok")

    engine = create_db_engine(database_url)  # a new process: new engine, new driver
    try:
        again = FakeController(make_session_factory(engine))
        assert rollout_id in [r for r in _unfinished(again.sessions)]
        again.driver().sync(rollout_id)
        assert in_flight(again.sessions, rollout_id) == [ids[1], ids[2]]
        assert again.enqueued == [ids[2]]
        for agent_id in ids[1:]:
            again.settle(agent_id, "ok")
        assert again.driver().sync(rollout_id) is None
        assert rollout_row(again.sessions, rollout_id).state == "completed"
        assert _unfinished(again.sessions) == []
    finally:
        engine.dispose()


def _unfinished(sessions: sessionmaker[Session]) -> list[str]:
    with sessions() as session:
        return rollouts.unfinished(session)


def test_start_selects_by_plan_or_all_and_only_one_runs_at_a_time(sessions, fake) -> None:
    team = make_agents(sessions, 2, plan="team")
    pro = make_agents(sessions, 1, plan="pro")
    by_plan = start(sessions, plan="pro")
    assert list(members(sessions, by_plan)) == pro
    with sessions() as session, pytest.raises(Conflict) as refused:
        rollouts.start(
            session,
            selector={"all": True},
            image=None,
            max_unavailable=1,
            max_failures=1,
            created_by=None,
        )
    assert refused.value.code == "rollout_in_progress"
    with sessions() as session:
        rollouts.abort(session, by_plan, NOW)
        session.commit()
    everyone = start(sessions, all=True)
    assert sorted(members(sessions, everyone)) == sorted(team + pro)
    with sessions() as session:
        assert [r.id for r in newest(session)] == [everyone, by_plan]


@pytest.mark.parametrize(
    ("selector", "image", "code"),
    [
        ({"agents": ["nope"]}, None, "agent_not_found"),
        ({"plan": "gold"}, None, "unknown_plan"),
        ({"plan": "free"}, None, "no_agents_selected"),
        ({"plan": "team", "all": True}, None, "invalid_request"),
        ({}, None, "invalid_request"),
        ({"all": True}, "missing:1", "image_not_found"),
    ],
)
def test_start_refuses_bad_selections(sessions, selector, image, code) -> None:
    make_agents(sessions, 1)
    with sessions() as session, pytest.raises(InvalidRequest) as refused:
        rollouts.start(
            session,
            selector=selector,
            image=image,
            max_unavailable=1,
            max_failures=1,
            created_by=None,
            image_exists=lambda name: name != "missing:1",
        )
    assert refused.value.code == code


def test_unknown_rollout(sessions, fake) -> None:
    with sessions() as session, pytest.raises(NotFound) as missing:
        rollouts.pause(session, "0" * 32)
    assert missing.value.code == "rollout_not_found"
    assert fake.driver().sync("0" * 32) is None


def test_plan_image_counts_as_the_previous_image(sessions, fake) -> None:
    ids = make_agents(sessions, 1, plan="pro")
    with sessions() as session:
        session.get(Plan, "pro").image = OLD
        agent = session.get(Agent, ids[0])
        agent.image, agent.applied_config = None, None  # never had a container
        session.commit()
    rollout_id = start(sessions, ids)
    fake.driver().sync(rollout_id)
    with sessions() as session:
        member = session.get(RolloutAgent, (rollout_id, ids[0]))
        assert (member.state, member.previous_image, member.previous_pin) == (
            "updating",
            OLD,
            None,
        )
