"""Agents reach ClawHQ on a listener of their own, and nothing else of ClawHQ, under every
egress policy: proven from inside real agents of an ``open``, an ``allowlist`` and a ``none``
plan, next to a `clawhq serve` (as root, firewall on) whose user API listens on 0.0.0.0 — the
worst case, where the API's port is on every address of the host agents can route to.

From each agent: a user's token on the user API's port (at either network's gateway) reaches
nothing; the agents' listener answers the agent's webhook (its heartbeats arrive) but 404 for
the user API, the agent proxy, the login page and ``/metrics``. A control from the host shows
the user API does answer there: the refusals are the listener's and the firewall's doing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import remove_user_containers
from tests.integration.helpers import exec_in
from tests.integration.outside import tear_down
from tests.integration.served import Served, cli, serve_env
from tests.integration.test_egress_policy import _deploy, _token
from tests.integration.test_isolation import BB

NETWORK = "clawhq-lst-open"
EGRESS_NETWORK = "clawhq-lst-egress"
PORT_RANGE = "19850-19869"
POLICIES = {"free": "open", "pro": "allowlist", "team": "none"}

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for iptables")


@dataclass
class World:
    env: dict[str, str]
    server: Served
    gateways: tuple[str, str]  # the agent network's, the egress network's
    api_port: int
    agent_port: int
    users: dict[str, dict[str, str]]  # plan -> auth headers
    agents: dict[str, dict[str, Any]]  # plan -> agent


def get(container_id: str, url: str, token: str | None = None) -> tuple[int, str]:
    """A GET from inside the agent, with the server's status line in the output (``-S``)."""
    auth = ("--header", f"Authorization: Bearer {token}") if token else ()
    return exec_in(container_id, BB, "timeout", "5", BB, "wget", "-S", "-q", "-O", "-", *auth, url)


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, docker_runtime: Any, test_image: str
) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("listener")
    env = serve_env(
        tmp / "data",
        f"sqlite:///{tmp / 'clawhq.db'}",
        host="0.0.0.0",
        agent_network=NETWORK,
        egress_network=EGRESS_NETWORK,
        port_range=PORT_RANGE,
        firewall="auto",
        supervise="false",  # the engine is shared (see test_network_isolation)
    )
    gateways = (
        docker_runtime.ensure_network(NETWORK),
        docker_runtime.ensure_network(EGRESS_NETWORK),
    )
    stack: list[Any] = []
    users: dict[str, dict[str, str]] = {}
    user_ids: list[str] = []
    try:
        server = Served(env, tmp / "serve.log").start()
        stack.append(server)
        admin = _token(env, "listener-admin@example.com", "--admin")
        for plan, policy in POLICIES.items():
            reply = httpx.patch(
                f"{server.base}/api/admin/plans/{plan}/egress",
                json={"policy": policy},
                headers=admin,
                timeout=10,
            )
            assert reply.status_code == 200, reply.text
            users[plan] = _token(env, f"listener-{plan}@example.com", "--plan", plan)
            me = httpx.get(f"{server.base}/api/auth/me", headers=users[plan], timeout=10)
            user_ids.append(me.json()["id"])
        agents = {plan: _deploy(server.base, users[plan], name=plan) for plan in POLICIES}
        yield World(
            env,
            server,
            gateways,
            int(env["CLAWHQ_PORT"]),
            int(env["CLAWHQ_AGENT_LISTENER_PORT"]),
            users,
            agents,
        )
    finally:
        remove_user_containers(docker_runtime, user_ids)
        tear_down(docker_runtime, env, None, stack, (NETWORK, EGRESS_NETWORK))


@pytest.mark.parametrize("plan", list(POLICIES))
def test_an_agent_reaches_its_webhook_and_nothing_of_the_user_api(world: World, plan: str) -> None:
    agent = world.agents[plan]
    container = agent["containerId"]
    token = world.users[plan]["Authorization"].removeprefix("Bearer ")
    assert agent["lastHeartbeat"], "its webhook is reached (on the agents' listener)"
    agent_side = f"http://{world.gateways[0]}:{world.agent_port}"
    for gateway in world.gateways:
        code, out = get(container, f"http://{gateway}:{world.api_port}/api/agents", token)
        assert code != 0 and '"agents"' not in out, f"user API reached at {gateway}: {out}"
    for path in ("/api/agents", "/api/auth/me", "/metrics", "/login", f"/agents/{agent['id']}/"):
        code, out = get(container, agent_side + path, token)
        assert "404" in out and '"agents"' not in out and "clawhq_" not in out, (path, out)


def test_the_user_api_answers_on_those_addresses_from_the_host(world: World) -> None:
    """The control: from the host the user API is there (it listens on 0.0.0.0), so what kept
    the agents from it is the firewall; and the agents' listener refuses it to anyone."""
    headers = world.users["free"]
    for gateway in world.gateways:
        reply = httpx.get(f"http://{gateway}:{world.api_port}/api/agents", headers=headers)
        assert reply.status_code == 200, reply.text
    refused = httpx.get(
        f"http://{world.gateways[0]}:{world.agent_port}/api/agents", headers=headers
    )
    assert refused.status_code == 404 and refused.json()["code"] == "not_found"
    health = httpx.get(f"{world.server.base}/health").json()
    assert health["agentListener"] == "listening"
    status = cli(world.env, "network", "status")
    assert status.returncode == 0, status.stdout
