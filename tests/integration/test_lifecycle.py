"""Deploy, stop, start and delete through the API, against the real engine."""

from __future__ import annotations

from tests.integration.helpers import (
    containers_of,
    delete_leaves_nothing,
    deploy_running,
    exec_in,
    sdk,
    volume_exists,
    wait_for,
    wait_status,
)

BB = "/bin/busybox"


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
        # A new container (the stop revoked the old one's LLM token) on the same volume; the
        # stopped one is gone with it.
        assert again["containerId"] != container_id
        assert [c.id for c in containers_of(agent["id"])] == [again["containerId"]]
        assert exec_in(again["containerId"], BB, "cat", "/home/openclaw/note.txt") == (
            0,
            "kept\n",
        )
        container_id = again["containerId"]

        # Redeploy builds a new container on the same volume.
        redeployed = deploy_running(api, me, agent["id"])
        assert redeployed["containerId"] != container_id
        assert len(containers_of(agent["id"])) == 1
        assert (
            exec_in(redeployed["containerId"], BB, "cat", "/home/openclaw/note.txt")[1] == "kept\n"
        )

        delete_leaves_nothing(api, me, agent["id"])


def test_delete_keeping_the_workspace_then_prune_it(docker_app, monkeypatch) -> None:
    from typer.testing import CliRunner

    from clawhq.cli import app as cli
    from clawhq.runtime import labels
    from clawhq.services.workspaces import kept_workspaces

    with docker_app() as api:
        me = api.user(plan="pro")
        agent, alive = api.agent(me), api.agent(me)
        deploy_running(api, me, agent["id"])
        deploy_running(api, me, alive["id"])
        reply = api.client.delete(f"/api/agents/{agent['id']}", headers=me)
        assert reply.status_code == 204
        assert containers_of(agent["id"]) == []
        name = f"clawhq-workspace-{agent['id']}"
        assert volume_exists(name)
        # Another installation's kept workspace, on the same engine: never this one's to remove.
        foreign = sdk().volumes.create(
            labels={
                labels.SERVICE: labels.SERVICE_AGENT,
                labels.INSTANCE: "another-installation",
                labels.VOLUME_OF: "gone-elsewhere",
            }
        )
        try:
            kept = kept_workspaces(api.context.runtime, api.context.sessions)
            assert [v.name for v in kept] == [name]
            settings = api.context.settings
            monkeypatch.setenv("DATABASE_URL", settings.resolved_database_url)
            monkeypatch.setenv("CLAWHQ_DATA_DIR", str(settings.data_dir))
            runner = CliRunner()
            listed = runner.invoke(cli, ["workspaces", "list"])
            assert listed.exit_code == 0, listed.output
            assert f"{name}  agent {agent['id']}  user {me['X-User-Id']}" in listed.output
            dry = runner.invoke(cli, ["workspaces", "prune"])
            assert dry.exit_code == 0 and "would remove " + name in dry.output
            assert volume_exists(name)
            pruned = runner.invoke(cli, ["workspaces", "prune", "--yes"])
            assert pruned.exit_code == 0 and "removing " + name in pruned.output
            assert not volume_exists(name)
            assert volume_exists(f"clawhq-workspace-{alive['id']}")  # its agent still exists
            assert volume_exists(foreign.name)
            assert "no kept workspaces" in runner.invoke(cli, ["workspaces", "list"]).output
        finally:
            foreign.remove()


def test_list_reports_what_the_engine_sees(docker_app) -> None:
    with docker_app() as api:
        me = api.user(plan="pro")
        running = api.agent(me)
        idle = api.agent(me)
        deploy_running(api, me, running["id"])
        sdk().containers.get(containers_of(running["id"])[0].id).kill()

        def listed() -> dict[str, dict]:
            found = api.client.get("/api/agents", headers=me).json()["agents"]
            return {a["id"]: a for a in found}

        # The API answers from the controller's cache, which the engine's events keep current.
        wait_for(
            lambda: listed()[running["id"]]["containerStatus"] == "exited",
            what="the kill to reach the observed state",
        )
        assert listed()[idle["id"]]["containerStatus"] == "missing"
