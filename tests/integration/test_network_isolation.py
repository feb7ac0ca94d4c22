"""Network isolation, enforced by `clawhq serve`'s firewall rules and proven from inside an agent.

A real `clawhq serve` (as root, so it installs the rules) runs two agents on a network of this
module's own (``clawhq-sec-test``), next to stand-ins the test made: listeners on the host, and
"the internet" and "the metadata service" in a network namespace (see ``outside.py``). From
inside agent A: B, the host's services and the metadata address are out of reach; ClawHQ's
webhook and the outside stand-in are not. A control test removes the rules and shows the same
probes get through, so the blocked results are the firewall's doing. No traffic leaves the
machine: every address probed is the test's own.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.outside import (
    HOST_SIDE,
    INTERNET,
    METADATA,
    HostListener,
    Outside,
    tear_down,
)
from tests.integration.served import Served, cli, serve_env
from tests.integration.test_isolation import fetch

NETWORK = "clawhq-sec-test"
EGRESS_NETWORK = "clawhq-sec-egress"
PORT_RANGE = "19900-19999"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for iptables and netns")


@dataclass
class World:
    env: dict[str, str]
    server: Served
    outside: Outside
    gateway: str
    on_gateway: HostListener
    on_any: HostListener
    a: dict[str, Any]
    b: dict[str, Any]
    headers: dict[str, str]

    def agent(self, agent_id: str) -> dict[str, Any]:
        return httpx.get(
            f"{self.server.base}/api/agents/{agent_id}", headers=self.headers, timeout=10
        ).json()

    def from_a(self, url: str) -> tuple[int, str]:
        return fetch(self.a["containerId"], url)


def _deploy(base: str, headers: dict[str, str], name: str) -> dict[str, Any]:
    created = httpx.post(
        f"{base}/api/agents", json={"name": name, "apiKey": "sk-test-123456"}, headers=headers
    ).json()
    reply = httpx.post(f"{base}/api/agents/{created['id']}/deploy", headers=headers, timeout=30)
    assert reply.status_code == 202, reply.text
    body: dict[str, Any] = {}
    for _ in range(300):
        body = httpx.get(f"{base}/api/agents/{created['id']}", headers=headers).json()
        if body["status"] == "RUNNING" and body["lastHeartbeat"]:
            return body
        time.sleep(0.1)
    raise AssertionError(f"agent not running with a heartbeat: {body}")


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, docker_runtime: Any, test_image: str
) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("netiso")
    env = serve_env(
        tmp / "data",
        f"sqlite:///{tmp / 'clawhq.db'}",
        agent_network=NETWORK,
        egress_network=EGRESS_NETWORK,
        port_range=PORT_RANGE,
        firewall="auto",
        # The engine is shared: a supervisor here would remove other ClawHQ instances' agents
        # as strays (they are not in this module's database).
        supervise="false",
    )
    gateway = docker_runtime.ensure_network(NETWORK)
    bridge = docker_runtime.network_facts(NETWORK).bridge
    stack: list[Any] = []
    user_id = None
    try:
        outside = Outside(bridge, tmp).open()
        stack.append(outside)
        server = Served(env, tmp / "serve.log").start()
        stack.append(server)
        created = cli(env, "users", "create", "netiso@example.com", "--plan", "pro")
        assert created.returncode == 0, created.stderr
        headers = {"Authorization": f"Bearer {created.stdout.strip().splitlines()[-1]}"}
        user_id = httpx.get(f"{server.base}/api/auth/me", headers=headers).json()["id"]
        a = _deploy(server.base, headers, "a")
        b = _deploy(server.base, headers, "b")
        on_gateway, on_any = HostListener(gateway), HostListener("0.0.0.0")
        stack += [on_gateway, on_any]
        yield World(env, server, outside, gateway, on_gateway, on_any, a, b, headers)
    finally:
        tear_down(docker_runtime, env, user_id, stack, (NETWORK, EGRESS_NETWORK))


def _firewall(world: World, action: str) -> None:
    result = cli(world.env, "network", action)
    assert result.returncode == 0, result.stdout + result.stderr


def test_serve_installs_the_rules_and_says_so(world: World) -> None:
    assert "firewall: agents on clawhq-sec-test" in world.server.log()
    status = cli(world.env, "network", "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "are in place" in status.stdout


def test_agent_reaches_clawhqs_webhook(world: World) -> None:
    # Both agents' heartbeats arrived (the fixture waited for them) on the agents' listener;
    # the user API's port, on the same address, is not reachable from an agent at all.
    assert world.agent(world.a["id"])["lastHeartbeat"]
    assert world.from_a(f"http://{world.gateway}:{world.env['CLAWHQ_PORT']}/health")[0] != 0


def test_agent_cannot_reach_another_agent(world: World) -> None:
    from tests.integration.helpers import sdk

    info = sdk().api.inspect_container(world.b["containerId"])
    b_ip = info["NetworkSettings"]["Networks"][NETWORK]["IPAddress"]
    code, out = fetch(world.b["containerId"], f"http://{b_ip}:18789/healthz")
    assert code == 0 and '"ok":true' in out  # B is up and that URL is right
    assert world.from_a(f"http://{b_ip}:18789/healthz")[0] != 0
    assert world.from_a(f"http://{world.gateway}:{world.b['containerPort']}/healthz")[0] != 0


def test_agent_cannot_reach_services_on_the_host(world: World) -> None:
    targets = [
        f"http://{world.gateway}:{world.on_gateway.port}/",  # bound to the gateway address
        f"http://{world.gateway}:{world.on_any.port}/",  # bound to 0.0.0.0
        f"http://{HOST_SIDE}:{world.on_any.port}/",  # another address of the host
    ]
    for url in targets:
        code, out = world.from_a(url)
        assert code != 0, f"{url} answered: {out}"
    assert world.on_gateway.hits == 0 and world.on_any.hits == 0


def test_agent_cannot_reach_the_metadata_address(world: World) -> None:
    code, out = world.from_a(f"http://{METADATA}/latest/meta-data/")
    assert code != 0, out
    assert world.outside.hits(METADATA) == 0


def test_agent_reaches_the_outside(world: World) -> None:
    code, out = world.from_a(f"http://{INTERNET}/v1/models")
    assert code == 0, out
    assert f"stand-in at {INTERNET}" in out
    assert world.outside.hits(INTERNET) >= 1


def test_without_the_rules_the_same_probes_get_through(world: World) -> None:
    """The control: the blocked results above are the firewall's doing, not an accident."""
    _firewall(world, "teardown")
    try:
        assert cli(world.env, "network", "status").returncode == 1
        code, out = world.from_a(f"http://{world.gateway}:{world.on_gateway.port}/")
        assert code == 0 and "host" in out
        code, out = world.from_a(f"http://{METADATA}/")
        assert code == 0 and f"stand-in at {METADATA}" in out
    finally:
        _firewall(world, "setup")
        _firewall(world, "setup")  # idempotent: the same rules, once
    assert world.from_a(f"http://{world.gateway}:{world.on_gateway.port}/")[0] != 0
    assert world.from_a(f"http://{METADATA}/")[0] != 0
    status = cli(world.env, "network", "status")
    assert status.returncode == 0, status.stdout


def test_setup_is_idempotent(world: World) -> None:
    from clawhq.network.firewall import chain_names
    from tests.integration.outside import sh

    def listing() -> list[str]:
        lines = []
        for chain in ("INPUT", "DOCKER-USER", *chain_names(NETWORK), *chain_names(EGRESS_NETWORK)):
            lines += [line for line in sh("iptables", "-S", chain).stdout.splitlines()]
        return [line for line in lines if "clawhq" in line.lower()]

    before = listing()
    _firewall(world, "setup")
    assert listing() == before
    for name in (NETWORK, EGRESS_NETWORK):  # one jump per parent chain and network
        for parent in ("INPUT", "DOCKER-USER"):
            jumps = [line for line in before if line.startswith(f"-A {parent}")]
            assert sum(1 for line in jumps if f"agents on {name}" in line) == 1, jumps


def test_serve_log_is_clear_when_it_cannot_install(tmp_path: Path, world: World) -> None:
    env = {
        **world.env,
        "CLAWHQ_FIREWALL": "off",
        "CLAWHQ_PORT": str(int(world.env["CLAWHQ_PORT"]) + 1),
        "CLAWHQ_AGENT_LISTENER_PORT": str(int(world.env["CLAWHQ_AGENT_LISTENER_PORT"]) + 1),
    }
    served = Served(env, tmp_path / "off.log").start()
    served.stop()
    assert "CLAWHQ_FIREWALL=off" in served.log()
