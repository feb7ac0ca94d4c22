"""Workspace backups against the real engine (docs/backups.md): a known file survives its
deletion through a backup and a restore; a download is a plain tar.gz that imports back and
clones into a new agent; a tampered backup and a hostile upload are refused, changing nothing."""

from __future__ import annotations

import io
import tarfile
import time
from pathlib import Path
from typing import Any

from tests.conftest import Api
from tests.integration.helpers import deploy_running, exec_in, sdk, wait_status

BB = "/bin/busybox"
HOME = "/home/openclaw"


def wait_backup(api: Api, me: dict[str, str], agent_id: str, backup_id: str, **wanted: Any):
    body: dict[str, Any] = {}
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        url = f"/api/agents/{agent_id}/backups/{backup_id}"
        body = api.client.get(url, headers=me).json()
        held = api.context.operations.jobs.holds(agent_id)
        if all(body.get(k) == v for k, v in wanted.items()) and not held:
            return body
        time.sleep(0.2)
    raise AssertionError(f"backup is {body}, wanted {wanted}")


def take(api: Api, me: dict[str, str], agent_id: str) -> dict[str, Any]:
    reply = api.client.post(f"/api/agents/{agent_id}/backups", headers=me)
    assert reply.status_code == 202, reply.text
    return wait_backup(api, me, agent_id, reply.json()["id"], status="READY")


def running(api: Api, me: dict[str, str], agent_id: str) -> str:
    container_id: str = wait_status(api, me, agent_id, "RUNNING")["containerId"]
    return container_id


def cat(container_id: str, name: str) -> tuple[int, str]:
    return exec_in(container_id, BB, "cat", f"{HOME}/{name}")


def stored(api: Api) -> list[Path]:
    root = api.context.settings.data_dir / "backups"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_a_deleted_file_comes_back_with_a_restore(docker_app) -> None:
    with docker_app() as api:
        me = api.user(plan="pro")
        agent_id = api.agent(me)["id"]
        first = deploy_running(api, me, agent_id)["containerId"]
        script = f"echo remember-me > {HOME}/known.txt && mkdir -p {HOME}/memory"
        assert exec_in(first, BB, "sh", "-c", script)[0] == 0
        backup = take(api, me, agent_id)
        assert backup["size"] > 0 and backup["kind"] == "manual"
        after_backup = running(api, me, agent_id)  # stopped briefly, then started again

        assert exec_in(after_backup, BB, "rm", f"{HOME}/known.txt")[0] == 0
        assert exec_in(after_backup, BB, "sh", "-c", f"echo later > {HOME}/later.txt")[0] == 0
        url = f"/api/agents/{agent_id}/backups/{backup['id']}/restore"
        assert api.client.post(url, headers=me).status_code == 202
        done = wait_backup(api, me, agent_id, backup["id"], restoreStatus="RESTORED")
        restored = running(api, me, agent_id)
        assert cat(restored, "known.txt") == (0, "remember-me\n")
        assert cat(restored, "later.txt")[0] != 0  # replaced, not merged
        # The agent owns its restored home, and the workspace it replaced is kept.
        assert exec_in(restored, BB, "sh", "-c", f"echo ok > {HOME}/memory/new")[0] == 0
        safety = api.client.get(
            f"/api/agents/{agent_id}/backups/{done['restoreSafetyId']}", headers=me
        ).json()
        assert safety["kind"] == "pre_restore" and safety["status"] == "READY"
        helpers = sdk().containers.list(all=True, filters={"label": "clawhq.workspace-helper"})
        assert helpers == []  # every helper container went


def test_export_import_and_clone(docker_app) -> None:
    with docker_app() as api:
        me = api.user(plan="pro")
        agent_id = api.agent(me)["id"]
        container = deploy_running(api, me, agent_id)["containerId"]
        assert exec_in(container, BB, "sh", "-c", f"echo exported > {HOME}/known.txt")[0] == 0
        backup = take(api, me, agent_id)
        url = f"/api/agents/{agent_id}/backups/{backup['id']}/download"
        archive = api.client.get(url, headers=me)
        assert archive.status_code == 200, archive.text
        with tarfile.open(fileobj=io.BytesIO(archive.content)) as tar:
            assert tar.extractfile("./known.txt").read() == b"exported\n"  # type: ignore[union-attr]

        imported = api.client.post(
            f"/api/agents/{agent_id}/backups/import", headers=me, content=archive.content
        )
        assert imported.status_code == 201, imported.text
        clone = api.client.post(
            f"/api/agents/{agent_id}/backups/{imported.json()['id']}/clone",
            headers=me,
            json={"name": "the-clone", "apiKey": "sk-test-0123456789"},
        )
        assert clone.status_code == 201, clone.text
        cloned = deploy_running(api, me, clone.json()["id"])["containerId"]
        assert cat(cloned, "known.txt") == (0, "exported\n")
        assert cat(running(api, me, agent_id), "known.txt") == (0, "exported\n")


def test_a_tampered_backup_and_a_hostile_upload_change_nothing(docker_app) -> None:
    with docker_app() as api:
        me = api.user(plan="pro")
        agent_id = api.agent(me)["id"]
        container = deploy_running(api, me, agent_id)["containerId"]
        assert exec_in(container, BB, "sh", "-c", f"echo current > {HOME}/known.txt")[0] == 0
        backup = take(api, me, agent_id)
        (path,) = stored(api)
        data = bytearray(path.read_bytes())
        data[-40] ^= 0x01  # in the last frame
        path.write_bytes(bytes(data))

        base = f"/api/agents/{agent_id}/backups/{backup['id']}"
        reply = api.client.get(f"{base}/download", headers=me)
        assert reply.status_code == 409 and reply.json()["code"] == "backup_corrupt"
        assert api.client.post(f"{base}/restore", headers=me).status_code == 202
        failed = wait_backup(api, me, agent_id, backup["id"], restoreStatus="FAILED")
        assert failed["restoreError"].startswith("backup_corrupt")
        assert cat(running(api, me, agent_id), "known.txt") == (0, "current\n")

        hostile = io.BytesIO()
        with tarfile.open(fileobj=hostile, mode="w:gz") as tar:
            link = tarfile.TarInfo("innocent")
            link.type, link.linkname = tarfile.SYMTYPE, "/etc/shadow"
            tar.addfile(link)
        reply = api.client.post(
            f"/api/agents/{agent_id}/backups/import", headers=me, content=hostile.getvalue()
        )
        assert reply.status_code == 400 and reply.json()["code"] == "archive_invalid"
        listed = api.client.get(f"/api/agents/{agent_id}/backups", headers=me).json()
        assert [b["id"] for b in listed["backups"]] == [backup["id"]]
        assert stored(api) == [path]


def test_a_capped_workspace_is_restored_onto_a_capped_disk(docker_app, tmp_path: Path) -> None:
    from clawhq.runtime.disks import HostDisks
    from tests.conftest import unavailable

    if (problem := HostDisks(tmp_path).support()) is not None:
        unavailable("capped workspace disks", problem)
    with docker_app(agent_disk="64m") as api:
        me = api.user(plan="pro")
        agent_id = api.agent(me)["id"]
        container = deploy_running(api, me, agent_id)["containerId"]
        assert exec_in(container, BB, "sh", "-c", f"echo capped > {HOME}/known.txt")[0] == 0
        backup = take(api, me, agent_id)
        assert exec_in(running(api, me, agent_id), BB, "rm", f"{HOME}/known.txt")[0] == 0
        url = f"/api/agents/{agent_id}/backups/{backup['id']}/restore"
        assert api.client.post(url, headers=me).status_code == 202
        wait_backup(api, me, agent_id, backup["id"], restoreStatus="RESTORED")
        restored = running(api, me, agent_id)
        assert cat(restored, "known.txt") == (0, "capped\n")
        volume = sdk().volumes.get(f"clawhq-workspace-{agent_id}")
        point = api.context.settings.disk_dir / volume.name
        assert volume.attrs["Options"]["device"] == str(point)  # still its own disk
        code, output = exec_in(
            restored, BB, "dd", "if=/dev/zero", f"of={HOME}/fill", "bs=1M", "count=100"
        )
        assert code != 0 and "No space left on device" in output  # and still capped


def test_operators_take_list_and_prune_backups(docker_app, monkeypatch) -> None:
    from typer.testing import CliRunner

    from clawhq.cli import app as cli

    with docker_app() as api:
        me = api.user(plan="pro")
        agent_id = api.agent(me)["id"]
        deploy_running(api, me, agent_id)
        first = take(api, me, agent_id)
        settings = api.context.settings
        monkeypatch.setenv("DATABASE_URL", settings.resolved_database_url)
        monkeypatch.setenv("CLAWHQ_DATA_DIR", str(settings.data_dir))
        monkeypatch.setenv("CLAWHQ_ENCRYPTION_KEY", settings.encryption_key.get_secret_value())  # type: ignore[union-attr]
        monkeypatch.setenv("CLAWHQ_AGENT_IMAGE", settings.agent_image)
        runner = CliRunner()
        stopped = api.client.post(f"/api/agents/{agent_id}/stop", headers=me)
        assert stopped.status_code == 200  # the CLI's job needs no stop then
        made = runner.invoke(cli, ["backups", "create", agent_id])
        assert made.exit_code == 0, made.output
        assert "manual  READY" in made.output
        listed = runner.invoke(cli, ["backups", "list", "--agent", agent_id])
        assert listed.exit_code == 0 and listed.output.count(agent_id) == 2, listed.output
        dry = runner.invoke(cli, ["backups", "prune", "--keep", "1"])
        assert dry.exit_code == 0 and f"would delete {first['id']}" in dry.output, dry.output
        assert len(stored(api)) == 2
        pruned = runner.invoke(cli, ["backups", "prune", "--keep", "1", "--yes"])
        assert pruned.exit_code == 0 and f"deleted {first['id']}" in pruned.output
        assert len(stored(api)) == 1
        gone = api.client.get(f"/api/agents/{agent_id}/backups/{first['id']}", headers=me)
        assert gone.status_code == 404
