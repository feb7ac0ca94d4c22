"""Helpers for tests against the real engine."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from typing import Any

import docker
import docker.errors

from tests.conftest import Api


def wait_status(
    api: Api, headers: dict[str, str], agent_id: str, *wanted: str, timeout: float = 60
) -> dict[str, Any]:
    """Poll the API until the agent is in one of ``wanted`` (bounded; fails with the last body)."""
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = api.client.get(f"/api/agents/{agent_id}", headers=headers).json()
        if body["status"] in wanted:
            return body
        time.sleep(0.1)
    raise AssertionError(f"agent is {body.get('status')}, wanted {wanted}: {body}")


def deploy_running(api: Api, headers: dict[str, str], agent_id: str) -> dict[str, Any]:
    reply = api.client.post(f"/api/agents/{agent_id}/deploy", headers=headers)
    assert reply.status_code == 202, reply.text
    return wait_status(api, headers, agent_id, "RUNNING")


def sdk() -> docker.DockerClient:
    return docker.from_env(version="1.41")


def run_container(image: str, command: list[str] | None = None, **options: Any) -> Any:
    """Create and start a detached container of ``image``, which must exist: tests never
    pull (``containers.run`` would, from a registry this machine cannot reach)."""
    client = sdk()
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        raise AssertionError(
            f"image {image} is not on the engine: depend on the fixture that builds it"
        ) from None
    container = client.containers.create(image, command, **options)
    container.start()
    return container


def exec_in(container_id: str, *command: str) -> tuple[int, str]:
    result = sdk().containers.get(container_id).exec_run(list(command))
    return result.exit_code, result.output.decode(errors="replace")


def count_leases(api: Api) -> int:
    from sqlalchemy import text

    with api.context.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM port_leases")).scalar() or 0)


def volume_exists(name: str) -> bool:
    return any(v.name == name for v in sdk().volumes.list())


def delete_leaves_nothing(api: Api, headers: dict[str, str], agent_id: str) -> None:
    """Delete with ``keepWorkspace=false``: no container, workspace volume or port lease stays."""
    reply = api.client.delete(f"/api/agents/{agent_id}?keepWorkspace=false", headers=headers)
    assert reply.status_code == 204, reply.text
    assert containers_of(agent_id) == []
    assert not volume_exists(f"clawhq-workspace-{agent_id}")
    assert count_leases(api) == 0


def containers_of(agent_id: str) -> list[Any]:
    return sdk().containers.list(
        all=True, filters={"label": f"clawhq.agent-id={agent_id}"}, ignore_removed=True
    )


def wait_restarted(
    api: Api, headers: dict[str, str], agent_id: str, timeout: float = 60
) -> dict[str, Any]:
    """Poll until the agent is RUNNING again after at least one restart by the supervisor."""
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = api.client.get(f"/api/agents/{agent_id}", headers=headers).json()
        if body["status"] == "RUNNING" and body["restartCount"] >= 1:
            return body
        time.sleep(0.2)
    raise AssertionError(f"agent was not restarted: {body}")


def wait_for(predicate: Any, timeout: float = 60, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something true; that value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.contextmanager
def scratch_bridge(prefix: str, label: str, *, internal: bool = False) -> Iterator[tuple[str, str]]:
    """A bridge network like ClawHQ's (no traffic between its containers; ``internal``: they
    reach the host and nothing else), removed after: its name and gateway address, which is
    where the host's processes reach its containers from."""
    network = sdk().networks.create(
        f"{prefix}-{uuid.uuid4().hex[:8]}",
        driver="bridge",
        internal=internal,
        options={"com.docker.network.bridge.enable_icc": "false"},
        labels={"clawhq.test": label},
    )
    try:
        network.reload()
        yield network.name, network.attrs["IPAM"]["Config"][0]["Gateway"]
    finally:
        network.remove()
