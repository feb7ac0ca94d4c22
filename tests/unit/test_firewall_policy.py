"""In production the agent firewall fails closed (issue: hostile agents, round two, item 8)."""

from __future__ import annotations

from collections.abc import Callable

from clawhq.controller.host import FirewallState
from clawhq.settings import Settings
from tests.conftest import running_app
from tests.doubles.runtime import FakeRuntime


def healthy(url: str) -> bool:
    return True


def test_production_starts_no_agent_without_the_firewall(
    make_settings: Callable[..., Settings], fake_runtime: FakeRuntime
) -> None:
    settings = make_settings(env="production", supervise=False)
    with running_app(settings, fake_runtime, probe=healthy) as api:
        me = api.user()
        agent = api.agent(me)
        reply = api.client.post(f"/api/agents/{agent['id']}/deploy", headers=me)
        assert reply.status_code == 503, reply.text
        assert reply.json()["code"] == "firewall_not_ready"
        assert "CLAWHQ_FIREWALL=off" in reply.json()["detail"]
        body = api.client.get(f"/api/agents/{agent['id']}", headers=me).json()
        assert body["status"] == "STOPPED" and body["containerPort"] is None  # nothing changed
        assert fake_runtime.containers == {}
        health = api.client.get("/health")
        assert health.status_code == 503 and health.json()["firewall"] == "unknown"

        # What `clawhq serve` records once the rules are in:
        api.context.host.firewall = FirewallState.INSTALLED
        reply = api.client.post(f"/api/agents/{agent['id']}/deploy", headers=me)
        assert reply.status_code == 202, reply.text
        assert api.client.get("/health").json()["ok"] is True


def test_production_runs_without_rules_only_when_told_to(
    make_settings: Callable[..., Settings], fake_runtime: FakeRuntime
) -> None:
    settings = make_settings(env="production", firewall="off", supervise=False)
    with running_app(settings, fake_runtime, probe=healthy) as api:
        me = api.user()
        agent = api.agent(me)
        assert api.client.post(f"/api/agents/{agent['id']}/deploy", headers=me).status_code == 202


def test_development_keeps_serving_without_the_rules(fake_api) -> None:  # type: ignore[no-untyped-def]
    me = fake_api.user()
    agent = fake_api.agent(me)
    assert fake_api.client.post(f"/api/agents/{agent['id']}/deploy", headers=me).status_code == 202
    health = fake_api.client.get("/health").json()
    assert health["ok"] is True and health["firewall"] == "unknown"
