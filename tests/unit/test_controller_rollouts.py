"""Rollouts through the real controller, deterministic: FakeRuntime, a manual clock, a probe
that answers by the image each container runs. Success, a health-gate failure rolled back,
abort, and a ClawHQ restart mid-rollout — in milliseconds, with no sleeps."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest

from clawhq.controller import rollouts
from clawhq.db.models import Rollout, RolloutAgent
from clawhq.status import AgentStatus as S
from tests.conftest import TEST_IMAGE
from tests.doubles.runtime import FakeRuntime
from tests.unit.test_controller import (  # noqa: F401 (fixtures)
    START_TIMEOUT,
    World,
    deploy_running,
    fake,
    no_jitter,
    world,
    world_factory,
)

V2 = "clawhq-test-agent:v2"
BAD = "clawhq-test-agent:bad"


@pytest.fixture(autouse=True)
def images(fake: FakeRuntime) -> None:  # noqa: F811
    fake.images |= {V2, BAD}


def answer_by_image(world: World, fake: FakeRuntime) -> None:  # noqa: F811
    """Containers of the BAD image never answer healthy; every other one does."""

    def probe(url: str) -> bool:
        address = urlsplit(url).hostname
        for container in fake.containers.values():
            if container.address == address:
                return container.image != BAD
        return False

    world.controller.prober.set_probe(probe)


def start(world: World, image: str, agent_ids: list[str], **options: Any) -> str:  # noqa: F811
    with world.context.sessions() as session:
        found = rollouts.start(
            session,
            selector={"agents": agent_ids},
            image=image,
            max_unavailable=options.get("max_unavailable", 1),
            max_failures=options.get("max_failures", 1),
            created_by="test",
        )
        session.commit()
        rollout_id = found.id
    world.controller.enqueue_rollout(rollout_id)
    return rollout_id


def members(world: World, rollout_id: str) -> dict[str, RolloutAgent]:  # noqa: F811
    with world.context.sessions() as session:
        return {m.agent_id: m for m in rollouts.members_of(session, rollout_id)}


def state(world: World, rollout_id: str) -> str:  # noqa: F811
    with world.context.sessions() as session:
        found = session.get(Rollout, rollout_id)
        assert found is not None
        return found.state


def image_of(world: World, fake: FakeRuntime, agent_id: str) -> str:  # noqa: F811
    container_id = world.agent(agent_id).container_id
    assert container_id is not None
    return fake.containers[container_id].image


def test_a_rollout_moves_agents_a_few_at_a_time_on_their_ports(
    world: World,  # noqa: F811
    fake: FakeRuntime,  # noqa: F811
) -> None:
    answer_by_image(world, fake)
    running = [deploy_running(world) for _ in range(3)]
    ids = [agent_id for agent_id, _ in running]
    ports = {a: world.agent(a).container_port for a in ids}
    rollout_id = start(world, V2, ids, max_unavailable=2)
    world.controller.run_pending()
    in_flight = [m for m in members(world, rollout_id).values() if m.state == "updating"]
    assert len(in_flight) <= 2
    world.settle(2)
    assert state(world, rollout_id) == "completed"
    for agent_id, old_container in running:
        row = world.agent(agent_id)
        assert row.status is S.RUNNING and row.container_id != old_container
        assert image_of(world, fake, agent_id) == V2
        assert row.container_port == ports[agent_id]
        assert world.drift(agent_id) == (True, [])


def test_an_image_that_never_answers_is_rolled_back_and_stops_the_rollout(
    world: World,  # noqa: F811
    fake: FakeRuntime,  # noqa: F811
) -> None:
    answer_by_image(world, fake)
    ids = [deploy_running(world)[0] for _ in range(3)]
    ports = {a: world.agent(a).container_port for a in ids}
    rollout_id = start(world, BAD, ids, max_failures=1)
    world.settle(START_TIMEOUT + 5)
    assert state(world, rollout_id) == "failed"
    found = members(world, rollout_id)
    assert found[ids[0]].state == "rolled_back"
    assert "no healthy answer" in (found[ids[0]].reason or "")
    assert [found[a].state for a in ids[1:]] == ["pending", "pending"]  # never started
    for agent_id in ids:
        row = world.agent(agent_id)
        assert row.status is S.RUNNING, row.last_error
        assert image_of(world, fake, agent_id) == TEST_IMAGE
        assert row.container_port == ports[agent_id]  # the same port, through the rollback


def test_abort_skips_the_rest_and_lets_the_one_in_flight_finish(
    world: World,  # noqa: F811
    fake: FakeRuntime,  # noqa: F811
) -> None:
    answer_by_image(world, fake)
    ids = [deploy_running(world)[0] for _ in range(3)]
    world.probe.healthy = False
    world.controller.prober.set_probe(lambda url: False)  # the first one stays starting
    rollout_id = start(world, V2, ids)
    world.controller.run_pending()
    with world.context.sessions() as session:
        rollouts.abort(session, rollout_id, world.clock.now())
        session.commit()
    answer_by_image(world, fake)
    world.settle(2)
    found = members(world, rollout_id)
    assert state(world, rollout_id) == "aborted"
    assert found[ids[0]].state == "done"
    assert [found[a].state for a in ids[1:]] == ["skipped", "skipped"]
    assert image_of(world, fake, ids[1]) == TEST_IMAGE


def test_a_restart_of_clawhq_mid_rollout_carries_it_on(
    world_factory: Callable[..., World],  # noqa: F811
    fake: FakeRuntime,  # noqa: F811
) -> None:
    one = world_factory()
    answer_by_image(one, fake)
    ids = [deploy_running(one)[0] for _ in range(2)]
    one.controller.prober.set_probe(lambda url: False)
    rollout_id = start(one, V2, ids)
    one.controller.run_pending()  # the first agent is being recreated when "one" dies
    one.context.close()
    two = world_factory()  # ClawHQ comes back: nothing in memory, everything in the database
    answer_by_image(two, fake)
    two.context.sources.resync()
    two.settle(START_TIMEOUT + 5)
    assert state(two, rollout_id) == "completed"
    for agent_id in ids:
        assert two.agent(agent_id).status is S.RUNNING
        assert image_of(two, fake, agent_id) == V2
