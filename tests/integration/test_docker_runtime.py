"""The Docker runtime's own methods against the real engine: logs, stats, events, idempotency."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime

import pytest

from clawhq.errors import EngineUnavailable
from clawhq.runtime import ContainerSpec, ContainerState, Limits, PortBinding, labels
from clawhq.runtime.docker_engine import DockerRuntime
from tests.conftest import TEST_NETWORK


@pytest.fixture
def spec(test_image: str) -> ContainerSpec:
    agent_id = uuid.uuid4().hex
    return ContainerSpec(
        name=f"clawhq-runtime-test-{agent_id}",
        image=test_image,
        env={"TEST_AGENT_HEARTBEAT": "0"},
        labels={
            labels.SERVICE: labels.SERVICE_AGENT,
            labels.USER_ID: "runtime-test",
            labels.AGENT_ID: agent_id,
        },
        user="1001:1001",
        limits=Limits(
            memory_bytes=64 * 1024**2, cpu_quota=50_000, cpu_period=100_000, pids_limit=32
        ),
        port=PortBinding("127.0.0.1", 19690, 18789),
        network=TEST_NETWORK,
        volume=f"clawhq-workspace-{agent_id}",
        volume_path="/home/openclaw",
        log_max_size="1m",
        log_max_files=1,
    )


def test_create_start_observe_stop_remove(
    docker_runtime: DockerRuntime, spec: ContainerSpec
) -> None:
    docker_runtime.ensure_network(TEST_NETWORK)
    since = datetime.now(UTC)
    container = docker_runtime.create(spec)
    try:
        assert container.state is ContainerState.CREATED
        assert container.labels[labels.CONFIG_HASH] == spec.config_hash()
        docker_runtime.start(container.id)
        seen = docker_runtime.inspect(container.id)
        assert seen is not None and seen.is_running
        assert seen.agent_id == spec.labels[labels.AGENT_ID]
        assert [c.id for c in docker_runtime.list_managed({labels.AGENT_ID: seen.agent_id})] == [
            container.id
        ]

        for _ in range(50):
            if "starting in mode healthy" in docker_runtime.logs(container.id, tail=10):
                break
            time.sleep(0.1)
        assert "starting in mode healthy" in docker_runtime.logs(container.id, tail=10)

        stats = docker_runtime.stats(container.id)
        assert stats.memory_limit_bytes == 64 * 1024**2
        assert 0 < stats.memory_bytes < stats.memory_limit_bytes
        assert stats.pids >= 1

        events: list[str] = []

        def follow() -> None:
            for event in docker_runtime.events(since=since):
                if event.container_id == container.id:
                    events.append(event.action)
                    if event.action == "die":
                        return

        watcher = threading.Thread(target=follow, daemon=True)
        watcher.start()
        docker_runtime.stop(container.id, timeout=2)
        watcher.join(timeout=15)
        assert "start" in events and "die" in events

        stopped = docker_runtime.inspect(container.id)
        assert stopped is not None and stopped.state is ContainerState.EXITED
        assert stopped.exit_code is not None and stopped.oom_killed is False
        assert stopped.finished_at is not None and stopped.started_at is not None
    finally:
        docker_runtime.remove(container.id)
        docker_runtime.remove_volume(spec.volume)
    # Stop, remove and remove_volume are idempotent; inspect of a missing container is None.
    docker_runtime.stop(container.id, timeout=1)
    docker_runtime.remove(container.id)
    docker_runtime.remove_volume(spec.volume)
    assert docker_runtime.inspect(container.id) is None


def test_unreachable_engine_is_a_clear_error() -> None:
    runtime = DockerRuntime("unix:///nonexistent/docker.sock", timeout=2)
    with pytest.raises(EngineUnavailable):
        runtime.ping()
    with pytest.raises(EngineUnavailable):
        runtime.list_managed()


def test_image_ids_tell_which_image_a_container_was_made_from(
    docker_runtime: DockerRuntime, spec: ContainerSpec, test_image: str
) -> None:
    image_id = docker_runtime.image_id(test_image)
    assert image_id is not None and image_id.startswith("sha256:") and len(image_id) == 71
    assert docker_runtime.image_id("clawhq-no-such-image:never") is None
    docker_runtime.ensure_network(TEST_NETWORK)
    container = docker_runtime.create(spec)
    scoped = DockerRuntime(instance_id=uuid.uuid4().hex)
    try:
        assert container.image_id == image_id
        inspected = docker_runtime.inspect(container.id)
        assert inspected is not None and inspected.image_id == image_id
        [listed] = docker_runtime.list_managed({labels.AGENT_ID: spec.labels[labels.AGENT_ID]})
        assert listed.image_id == image_id
        # a runtime built for another installation does not list this one's containers
        assert scoped.list_managed({labels.AGENT_ID: spec.labels[labels.AGENT_ID]}) == []
    finally:
        scoped.close()
        docker_runtime.remove(container.id)
        docker_runtime.remove_volume(spec.volume)
