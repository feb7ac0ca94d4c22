"""Deploy, stop, start and delete through the API, against the real engine."""

from __future__ import annotations

from tests.integration.helpers import (
    containers_of,
    count_leases,
    deploy_running,
    exec_in,
    sdk,
    wait_status,
)

BB = "/bin/busybox"


def volume_exists(name: str) -> bool:
    return any(v.name == name for v in sdk().volumes.list())


def test_stop_start_keeps_the_workspace_and_delete_removes_everything(docker_app) -> None:
    with docker_app() as api:
        me = api.user()
        agent = api.agent(me)
        body = deploy_running(api, me, agent["id"])
        container_id = body["containerId"]
        code, _ = exec_in(container_id, BB, "sh", "-c", "echo kept > /home/openclaw/note.txt")
        assert code == 0
        # The root filesystem is read-only; /tmp is writable.
        assert exec_in(container_id, BB, "touch", "/etc/x")[0] != 0
        assert exec_in(container_id, BB, "touch", "/tmp/x")[0] == 0

        stopped = api.client.post(f"/api/agents/{agent['id']}/stop", headers=me).json()
        assert stopped["status"] == "STOPPED"
        assert sdk().containers.get(container_id).status == "exited"

        assert api.client.post(f"/api/agents/{agent['id']}/start", headers=me).status_code == 202
        again = wait_status(api, me, agent["id"], "RUNNING")
        assert again["containerId"] == container_id
        assert exec_in(container_id, BB, "cat", "/home/openclaw/note.txt") == (0, "kept\n")

        # Redeploy builds a new container on the same volume.
        redeployed = deploy_running(api, me, agent["id"])
        assert redeployed["containerId"] != container_id
        assert len(containers_of(agent["id"])) == 1
        assert (
            exec_in(redeployed["containerId"], BB, "cat", "/home/openclaw/note.txt")[1] == "kept\n"
        )

        assert (
            api.client.delete(
                f"/api/agents/{agent['id']}?keepWorkspace=false", headers=me
            ).status_code
            == 204
        )
        assert containers_of(agent["id"]) == []
        assert not volume_exists(f"clawhq-workspace-{agent['id']}")
        assert count_leases(api) == 0


def test_delete_keeping_the_workspace(docker_app) -> None:
    with docker_app() as api:
        me = api.user()
        agent = api.agent(me)
        deploy_running(api, me, agent["id"])
        reply = api.client.delete(f"/api/agents/{agent['id']}", headers=me)
        assert reply.status_code == 204
        assert containers_of(agent["id"]) == []
        name = f"clawhq-workspace-{agent['id']}"
        assert volume_exists(name)
        sdk().volumes.get(name).remove()


def test_list_reports_what_the_engine_sees(docker_app) -> None:
    with docker_app() as api:
        me = api.user(plan="pro")
        running = api.agent(me)
        idle = api.agent(me)
        deploy_running(api, me, running["id"])
        sdk().containers.get(containers_of(running["id"])[0].id).kill()
        listed = {a["id"]: a for a in api.client.get("/api/agents", headers=me).json()["agents"]}
        assert listed[running["id"]]["containerStatus"] == "exited"
        assert listed[idle["id"]]["containerStatus"] == "missing"
