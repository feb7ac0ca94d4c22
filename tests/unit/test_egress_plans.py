"""Plans' egress policies: set by an admin, they decide an agent's network and what its
container is told of ClawHQ's forward proxy and where its lookups go (with the fake runtime)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from clawhq.controller.spec import summary
from tests.conftest import Api
from tests.doubles.runtime import FakeRuntime
from tests.unit.test_abuse_and_audit import admin_headers
from tests.unit.test_api_rollouts import deployed


def _container(api: Api, runtime: FakeRuntime, owner: dict[str, str], agent_id: str):
    body = api.client.get(f"/api/agents/{agent_id}", headers=owner).json()
    return body, runtime.specs[body["containerId"]]


def test_an_allowlist_plan_puts_new_containers_behind_clawhq(
    fake_api: Api, fake_runtime: FakeRuntime
) -> None:
    owner, admin = fake_api.user(plan="pro"), admin_headers(fake_api)
    (before,) = deployed(fake_api, owner, 1)
    settings = fake_api.context.settings
    _, spec = _container(fake_api, fake_runtime, owner, before["id"])
    assert spec.network == settings.agent_network
    assert not any(name.startswith("CLAWHQ_EGRESS") for name in spec.env)
    assert spec.dns == ()  # the engine's resolvers, as before
    assert "dns" not in summary(spec)  # and its hash and drift report are what they were

    changed = fake_api.client.patch(
        "/api/admin/plans/pro/egress", json={"policy": "allowlist"}, headers=admin
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["egressPolicy"] == "allowlist"
    listed = {p["name"]: p for p in fake_api.client.get("/api/admin/plans", headers=admin).json()}
    assert (listed["pro"]["egressPolicy"], listed["free"]["egressPolicy"]) == ("allowlist", "open")

    # The running agent keeps its container and says what differs; a new one is behind ClawHQ.
    now, _ = _container(fake_api, fake_runtime, owner, before["id"])
    assert now["containerId"] == before["containerId"] and now["upToDate"] is False
    assert "network" in now["drift"] and "dns" in now["drift"]
    (after,) = deployed(fake_api, owner, 1)
    _, spec = _container(fake_api, fake_runtime, owner, after["id"])
    gateway = fake_runtime.ensure_network(settings.egress_network)
    assert spec.network == settings.egress_network
    assert spec.env["CLAWHQ_EGRESS_POLICY"] == "allowlist"
    assert spec.env["CLAWHQ_EGRESS_PROXY"] == f"http://{gateway}:{settings.egress_proxy_port}"
    assert spec.env["CLAWHQ_PROXY_ADDRESSES"] == gateway
    # Its lookups go to the gateway, whose port 53 the egress network's firewall rejects.
    assert spec.dns == (gateway,) and summary(spec)["dns"] == [gateway]
    assert replace(spec, dns=()).config_hash() != spec.config_hash()

    fake_api.client.patch("/api/admin/plans/pro/egress", json={"policy": "none"}, headers=admin)
    (closed,) = deployed(fake_api, owner, 1)
    _, spec = _container(fake_api, fake_runtime, owner, closed["id"])
    assert spec.network == settings.egress_network
    assert spec.env["CLAWHQ_EGRESS_POLICY"] == "none" and "CLAWHQ_EGRESS_PROXY" not in spec.env
    assert spec.dns == (gateway,)


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/api/admin/plans/pro/egress", {"policy": "everywhere"}, 422, "validation_error"),
        ("/api/admin/plans/pro/egress", {}, 422, "validation_error"),
        ("/api/admin/plans/gold/egress", {"policy": "none"}, 404, "plan_not_found"),
        ("/api/admin/plans/pro/disk", {"agentDisk": "1m"}, 422, "validation_error"),
        ("/api/admin/plans/pro/disk", {"agentDisk": "lots"}, 422, "validation_error"),
    ],
)
def test_plan_changes_are_validated(
    fake_api: Api, path: str, body: dict[str, object], status: int, code: str
) -> None:
    reply = fake_api.client.patch(path, json=body, headers=admin_headers(fake_api))
    assert (reply.status_code, reply.json()["code"]) == (status, code), reply.text


def test_only_admins_change_plans_and_disk_sizes_read_back(fake_api: Api) -> None:
    owner, admin = fake_api.user(), admin_headers(fake_api)
    for path, body in (("egress", {"policy": "none"}), ("disk", {"agentDisk": "4g"})):
        reply = fake_api.client.patch(f"/api/admin/plans/free/{path}", json=body, headers=owner)
        assert reply.status_code == 403
    sized = fake_api.client.patch(
        "/api/admin/plans/team/disk", json={"agentDisk": "4g"}, headers=admin
    )
    assert sized.json()["agentDisk"] == 4 * 1024**3
    cleared = fake_api.client.patch(
        "/api/admin/plans/team/disk", json={"agentDisk": None}, headers=admin
    )
    assert cleared.json()["agentDisk"] is None
