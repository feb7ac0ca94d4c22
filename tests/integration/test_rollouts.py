"""Rollouts on the real engine with the test agent: v1 → v2 succeeds, v2 → a crashing v3 is
rolled back and stops the rollout, workspaces and ports untouched throughout."""

from __future__ import annotations

from typing import Any

from tests.conftest import TEST_IMAGE, Api
from tests.integration.helpers import deploy_running, exec_in, sdk, wait_for, wait_status

FAST = {"start_timeout": 8, "reconcile_interval": 2}


def rollout(api: Api, admin: dict[str, str], **body: Any) -> dict[str, Any]:
    reply = api.client.post("/api/admin/rollouts", json=body, headers=admin)
    assert reply.status_code == 201, reply.text
    rollout_id = reply.json()["id"]

    def finished() -> dict[str, Any] | None:
        found = api.client.get(f"/api/admin/rollouts/{rollout_id}", headers=admin).json()
        return found if found["finished"] else None

    return wait_for(finished, timeout=120, what="the rollout to finish")  # type: ignore[no-any-return]


def image_of(container_id: str) -> str:
    return sdk().containers.get(container_id).attrs["Config"]["Image"]


def test_rollout_recreates_health_gated_and_rolls_back_a_bad_image(
    docker_app, image_variant
) -> None:
    v2, v3 = image_variant("healthy"), image_variant("crash")
    with docker_app(**FAST) as api:
        admin = api.admin()
        me = api.user(plan="pro")
        ids = [api.agent(me)["id"] for _ in range(3)]
        before = {agent_id: deploy_running(api, me, agent_id) for agent_id in ids}
        for agent_id, body in before.items():
            exec_in(body["containerId"], "/bin/busybox", "sh", "-c", f"echo {agent_id} > ~/kept")
            assert image_of(body["containerId"]) == TEST_IMAGE

        done = rollout(api, admin, image=v2, agents=ids, maxUnavailable=2)
        assert done["state"] == "completed", done
        assert done["counts"].get("done") == 3
        for agent_id in ids:
            body = wait_status(api, me, agent_id, "RUNNING")
            assert body["containerId"] != before[agent_id]["containerId"]
            assert image_of(body["containerId"]) == v2
            assert body["containerPort"] == before[agent_id]["containerPort"]
            assert body["upToDate"] is True and body["drift"] == []
            code, kept = exec_in(body["containerId"], "/bin/busybox", "cat", "/home/openclaw/kept")
            assert code == 0 and kept.strip() == agent_id  # the workspace is untouched
        on_v2 = {a: api.client.get(f"/api/agents/{a}", headers=me).json() for a in ids}

        bad = rollout(api, admin, image=v3, agents=ids, maxUnavailable=1, maxFailures=1)
        assert bad["state"] == "failed", bad
        members = {m["agentId"]: m for m in bad["members"]}
        first = members[ids[0]]
        assert first["state"] == "rolled_back"
        assert "exited with code 3" in first["reason"], first
        back = wait_status(api, me, ids[0], "RUNNING")
        assert image_of(back["containerId"]) == v2
        assert back["containerPort"] == on_v2[ids[0]]["containerPort"]
        code, kept = exec_in(back["containerId"], "/bin/busybox", "cat", "/home/openclaw/kept")
        assert code == 0 and kept.strip() == ids[0]
        for agent_id in ids[1:]:  # never touched: the rollout stopped at its first failure
            assert members[agent_id]["state"] in ("pending", "skipped")
            now = api.client.get(f"/api/agents/{agent_id}", headers=me).json()
            assert now["containerId"] == on_v2[agent_id]["containerId"]
            assert now["status"] == "RUNNING"


def test_drift_is_shown_and_only_a_rollout_applies_it(docker_app, image_variant) -> None:
    v2 = image_variant("healthy")
    with docker_app(**FAST) as api:
        admin = api.admin()
        me = api.user()
        agent_id = api.agent(me)["id"]
        running = deploy_running(api, me, agent_id)
        plan = api.client.patch("/api/admin/plans/free", json={"image": v2}, headers=admin)
        assert plan.status_code == 200, plan.text
        drifted = wait_for(
            lambda: (
                (b := api.client.get(f"/api/agents/{agent_id}", headers=me).json())["upToDate"]
                is False
                and b
            ),
            what="the agent to show as out of date",
        )
        assert "image" in drifted["drift"]
        api.context.sources.resync()
        assert api.context.controller.wait_idle()
        same = api.client.get(f"/api/agents/{agent_id}", headers=me).json()
        assert same["containerId"] == running["containerId"]  # drift alone recreates nothing
        done = rollout(api, admin, plan="free")
        assert done["state"] == "completed", done
        after = wait_status(api, me, agent_id, "RUNNING")
        assert image_of(after["containerId"]) == v2 and after["upToDate"] is True
