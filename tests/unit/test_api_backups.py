"""Workspace backups through the API over the in-memory runtime: take, restore, download,
import, clone, and every failure leaving nothing behind (docs/backups.md)."""

from __future__ import annotations

import gzip
import io
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from clawhq.errors import EngineError
from tests.conftest import Api
from tests.doubles.runtime import FakeRuntime
from tests.unit.test_api_agents import wait_status


def volume(agent_id: str) -> str:
    return f"clawhq-workspace-{agent_id}"


def wait_backup(api: Api, headers: dict[str, str], agent_id: str, backup_id: str, **wanted: str):
    body: dict[str, Any] = {}
    for _ in range(300):
        body = api.client.get(f"/api/agents/{agent_id}/backups/{backup_id}", headers=headers).json()
        if all(body.get(k) == v for k, v in wanted.items()):
            return body
        time.sleep(0.02)
    raise AssertionError(f"backup is {body}, wanted {wanted}")


def running_agent(
    api: Api, runtime: FakeRuntime, files: dict[str, bytes], plan: str = "pro"
) -> tuple[dict, str]:
    owner = api.user(plan=plan)
    agent = api.agent(owner)
    assert api.client.post(f"/api/agents/{agent['id']}/deploy", headers=owner).status_code == 202
    wait_status(api, owner, agent["id"], "RUNNING")
    runtime.workspace_files[volume(agent["id"])] = dict(files)
    return owner, agent["id"]


def take(api: Api, owner: dict[str, str], agent_id: str, status: str = "READY") -> dict:
    reply = api.client.post(f"/api/agents/{agent_id}/backups", headers=owner)
    assert reply.status_code == 202, reply.text
    assert reply.json()["kind"] == "manual"
    done = wait_backup(api, owner, agent_id, reply.json()["id"], status=status)
    released(api, agent_id)
    return done


def released(api: Api, agent_id: str) -> None:
    """Wait for the job to let go of the agent (once it has started it again)."""
    for _ in range(300):
        if not api.context.operations.jobs.holds(agent_id):
            return
        time.sleep(0.02)
    raise AssertionError("the job still holds the agent")


def stored(api: Api) -> list[Path]:
    root = api.context.settings.data_dir / "backups"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def targz(members: dict[str, bytes], link: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
        if link is not None:
            info = tarfile.TarInfo(link)
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
    return buffer.getvalue()


def test_backup_restore_brings_a_deleted_file_back(
    fake_api: Api, fake_runtime: FakeRuntime
) -> None:
    owner, agent_id = running_agent(fake_api, fake_runtime, {"memory/notes.md": b"remember me"})
    backup = take(fake_api, owner, agent_id)
    assert backup["size"] > 0 and len(backup["sha256"]) == 64 and backup["error"] is None
    assert fake_runtime.exports == 1
    wait_status(fake_api, owner, agent_id, "RUNNING")  # started again after the short stop
    assert len(stored(fake_api)) == 1

    fake_runtime.workspace_files[volume(agent_id)] = {"other.txt": b"written after"}
    url = f"/api/agents/{agent_id}/backups/{backup['id']}/restore"
    reply = fake_api.client.post(url, headers=owner)
    assert reply.status_code == 202, reply.text
    done = wait_backup(fake_api, owner, agent_id, backup["id"], restoreStatus="RESTORED")
    released(fake_api, agent_id)
    assert fake_runtime.workspace_files[volume(agent_id)] == {"memory/notes.md": b"remember me"}
    wait_status(fake_api, owner, agent_id, "RUNNING")

    # The workspace the restore replaced is a backup of its own, which restores it back.
    safety = done["restoreSafetyId"]
    listed = fake_api.client.get(f"/api/agents/{agent_id}/backups", headers=owner).json()
    kinds = {b["id"]: b["kind"] for b in listed["backups"]}
    assert kinds == {backup["id"]: "manual", safety: "pre_restore"}
    fake_api.client.post(f"/api/agents/{agent_id}/backups/{safety}/restore", headers=owner)
    wait_backup(fake_api, owner, agent_id, safety, restoreStatus="RESTORED")
    assert fake_runtime.workspace_files[volume(agent_id)] == {"other.txt": b"written after"}


def test_delete_removes_the_stored_object(fake_api: Api, fake_runtime: FakeRuntime) -> None:
    owner, agent_id = running_agent(fake_api, fake_runtime, {"a": b"1"})
    backup = take(fake_api, owner, agent_id)
    url = f"/api/agents/{agent_id}/backups/{backup['id']}"
    assert fake_api.client.delete(url, headers=owner).status_code == 204
    assert stored(fake_api) == []
    assert fake_api.client.get(url, headers=owner).json()["code"] == "backup_not_found"


def test_download_import_and_clone(fake_api: Api, fake_runtime: FakeRuntime) -> None:
    big = bytes(range(256)) * 1024  # 256 KiB: well over the 64 KiB body limit once imported
    owner, agent_id = running_agent(fake_api, fake_runtime, {"notes.md": b"hi", "big.bin": big})
    backup = take(fake_api, owner, agent_id)
    reply = fake_api.client.get(
        f"/api/agents/{agent_id}/backups/{backup['id']}/download", headers=owner
    )
    assert reply.status_code == 200 and reply.headers["content-type"] == "application/gzip"
    with tarfile.open(fileobj=io.BytesIO(reply.content)) as tar:
        assert tar.extractfile("./notes.md").read() == b"hi"  # type: ignore[union-attr]
    assert len(reply.content) == backup["plaintextSize"]

    upload = targz({"notes.md": b"imported", "random.bin": __import__("os").urandom(200_000)})
    imported = fake_api.client.post(
        f"/api/agents/{agent_id}/backups/import", headers=owner, content=upload
    )
    assert imported.status_code == 201, imported.text
    assert imported.json()["kind"] == "import" and imported.json()["status"] == "READY"

    clone = fake_api.client.post(
        f"/api/agents/{agent_id}/backups/{imported.json()['id']}/clone",
        headers=owner,
        json={"name": "the-clone", "apiKey": "sk-test-0123456789"},
    )
    assert clone.status_code == 201, clone.text
    assert clone.json()["status"] == "STOPPED" and clone.json()["userId"] == owner["X-User-Id"]
    files = fake_runtime.workspace_files[volume(clone.json()["id"])]
    assert files["notes.md"] == b"imported" and len(files["random.bin"]) == 200_000


def test_a_hostile_upload_is_refused_and_nothing_is_kept(
    fake_api: Api, fake_runtime: FakeRuntime
) -> None:
    owner, agent_id = running_agent(fake_api, fake_runtime, {"a": b"1"})
    url = f"/api/agents/{agent_id}/backups/import"
    for body, code in (
        (targz({"ok": b"x"}, link="evil"), "archive_invalid"),
        (targz({"../up": b"x"}), "archive_invalid"),
        (b"not a gzip at all", "archive_invalid"),
        (gzip.compress(b"\0" * 1024) + b"trailing", "archive_invalid"),
    ):
        reply = fake_api.client.post(url, headers=owner, content=body)
        assert reply.status_code == 400, reply.text
        assert reply.json()["code"] == code
    listed = fake_api.client.get(f"/api/agents/{agent_id}/backups", headers=owner).json()
    assert listed["backups"] == [] and stored(fake_api) == []


def test_an_upload_over_the_cap_is_413(make_settings: Any, fake_runtime: FakeRuntime) -> None:
    from tests.conftest import running_app

    settings = make_settings(backup_max_upload="1m", supervise=False)
    with running_app(settings, fake_runtime, probe=lambda url: True) as api:
        owner = api.user()
        agent = api.agent(owner)
        url = f"/api/agents/{agent['id']}/backups/import"
        upload = targz({"r.bin": __import__("os").urandom(2 * 1024**2)})
        reply = api.client.post(url, headers=owner, content=upload)
        assert reply.status_code == 413 and reply.json()["code"] == "archive_too_large"
        streamed = api.client.post(url, headers=owner, content=iter([upload]))  # no length
        assert streamed.status_code == 413 and streamed.json()["code"] == "archive_too_large"
        assert stored(api) == []


def test_a_tampered_backup_is_refused(fake_api: Api, fake_runtime: FakeRuntime) -> None:
    owner, agent_id = running_agent(fake_api, fake_runtime, {"a": b"precious"})
    backup = take(fake_api, owner, agent_id)
    (path,) = stored(fake_api)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    base = f"/api/agents/{agent_id}/backups/{backup['id']}"
    reply = fake_api.client.get(f"{base}/download", headers=owner)
    assert reply.status_code == 409 and reply.json()["code"] == "backup_corrupt"

    fake_runtime.workspace_files[volume(agent_id)] = {"now": b"current"}
    assert fake_api.client.post(f"{base}/restore", headers=owner).status_code == 202
    failed = wait_backup(fake_api, owner, agent_id, backup["id"], restoreStatus="FAILED")
    assert failed["restoreError"].startswith("backup_corrupt: chunk 0 of the backup fails")
    assert fake_runtime.workspace_files[volume(agent_id)] == {"now": b"current"}
    assert failed["restoreSafetyId"] is None  # refused before anything changed
    wait_status(fake_api, owner, agent_id, "RUNNING")


def test_a_failed_backup_stores_nothing_and_restarts_the_agent(
    fake_api: Api, fake_runtime: FakeRuntime
) -> None:
    owner, agent_id = running_agent(fake_api, fake_runtime, {"a": b"1"})
    fake_runtime.fail_archives["export_volume"] = EngineError("the engine broke")
    backup = take(fake_api, owner, agent_id, status="FAILED")
    assert "the engine broke" in backup["error"] and backup["size"] is None
    assert stored(fake_api) == []
    wait_status(fake_api, owner, agent_id, "RUNNING")


def test_a_restore_that_breaks_half_way_puts_the_previous_workspace_back(
    fake_api: Api, fake_runtime: FakeRuntime
) -> None:
    owner, agent_id = running_agent(fake_api, fake_runtime, {"old": b"from the backup"})
    backup = take(fake_api, owner, agent_id)
    fake_runtime.workspace_files[volume(agent_id)] = {"new": b"the latest"}
    fake_runtime.fail_import_after = 10
    url = f"/api/agents/{agent_id}/backups/{backup['id']}/restore"
    assert fake_api.client.post(url, headers=owner).status_code == 202
    failed = wait_backup(fake_api, owner, agent_id, backup["id"], restoreStatus="FAILED")
    assert "the previous workspace is back" in failed["restoreError"]
    assert fake_runtime.workspace_files[volume(agent_id)] == {"new": b"the latest"}
    wait_status(fake_api, owner, agent_id, "RUNNING")


def test_an_agent_a_job_holds_refuses_operations(fake_api: Api, fake_runtime: FakeRuntime) -> None:
    owner, agent_id = running_agent(fake_api, fake_runtime, {"a": b"1"})
    jobs = fake_api.context.operations.jobs
    jobs.claim(agent_id, "a backup is being taken")
    try:
        for action in ("stop", "deploy"):
            reply = fake_api.client.post(f"/api/agents/{agent_id}/{action}", headers=owner)
            assert reply.status_code == 409 and reply.json()["code"] == "agent_busy"
        reply = fake_api.client.post(f"/api/agents/{agent_id}/backups", headers=owner)
        assert reply.status_code == 409 and reply.json()["code"] == "agent_busy"
    finally:
        jobs.release(agent_id)
    assert fake_api.client.post(f"/api/agents/{agent_id}/stop", headers=owner).status_code == 200


def test_a_restart_mid_backup_fails_it_and_starts_the_agent_again(
    fake_api: Api, fake_runtime: FakeRuntime
) -> None:
    from clawhq.controller import backup_rows
    from clawhq.db.backups import AgentBackup, BackupKind

    owner, agent_id = running_agent(fake_api, fake_runtime, {"a": b"1"})
    context = fake_api.context
    assert fake_api.client.post(f"/api/agents/{agent_id}/stop", headers=owner).status_code == 200
    with context.sessions.begin() as session:  # what a ClawHQ killed mid-backup leaves
        row = backup_rows.new_backup(
            session, agent_id, owner["X-User-Id"], BackupKind.MANUAL, context.deps.clock.now()
        )
        backup_rows.holding_agent(row, True)
        backup_id = row.id
    partial = context.settings.data_dir / "backups" / row.store_key  # e.g. S3 without abort
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"half a backup")
    context.backups.recover()
    body = wait_backup(fake_api, owner, agent_id, backup_id, status="FAILED")
    assert "ClawHQ stopped" in body["error"] and not partial.exists()
    wait_status(fake_api, owner, agent_id, "RUNNING")
    with context.sessions() as session:
        assert session.get(AgentBackup, backup_id).status == "FAILED"


def test_another_users_backup_does_not_exist(fake_api: Api, fake_runtime: FakeRuntime) -> None:
    owner, agent_id = running_agent(fake_api, fake_runtime, {"a": b"1"})
    backup = take(fake_api, owner, agent_id)
    other = fake_api.user()
    mine = other_agent = fake_api.agent(other)["id"]
    for url in (
        f"/api/agents/{agent_id}/backups/{backup['id']}",
        f"/api/agents/{mine}/backups/{backup['id']}",  # someone else's backup under my agent
    ):
        reply = fake_api.client.get(url, headers=other)
        assert reply.status_code == 404, url
    reply = fake_api.client.post(
        f"/api/agents/{other_agent}/backups/{backup['id']}/restore", headers=other
    )
    assert reply.status_code == 404


@pytest.mark.parametrize("keep", [1])
def test_prune_keeps_the_newest(fake_api: Api, fake_runtime: FakeRuntime, keep: int) -> None:
    owner, agent_id = running_agent(fake_api, fake_runtime, {"a": b"1"})
    ids = [take(fake_api, owner, agent_id)["id"] for _ in range(3)]
    gone = fake_api.context.backups.prune(keep)
    assert sorted(r.id for r in gone) == sorted(ids[:2])
    listed = fake_api.client.get(f"/api/agents/{agent_id}/backups", headers=owner).json()
    assert [b["id"] for b in listed["backups"]] == ids[2:]
    assert len(stored(fake_api)) == 1


def test_key_rotation_reseals_backups(fake_api: Api, fake_runtime: FakeRuntime) -> None:
    import dataclasses

    from clawhq.backups import Download
    from clawhq.controller.backups import Backups
    from clawhq.crypto import Keyring, generate_key
    from clawhq.db.backups import AgentBackup
    from clawhq.setting_values import decode_encryption_key

    owner, agent_id = running_agent(fake_api, fake_runtime, {"a": b"kept"})
    backup = take(fake_api, owner, agent_id)
    context = fake_api.context
    old = decode_encryption_key(context.settings.encryption_key.get_secret_value())  # type: ignore[union-attr]
    rotated = Keyring(decode_encryption_key(generate_key()), (old,))
    deps = dataclasses.replace(context.deps, keyring=rotated)
    backups = Backups(deps, context.operations, context.backups.store, threads=False)
    assert backups.reseal() == (1, 0)
    assert backups.reseal() == (0, 0)  # all current now
    with context.sessions() as session:
        row = session.get(AgentBackup, backup["id"])
        assert row.key_id == rotated.current_key_id and row.sha256 != backup["sha256"]
    new_only = Keyring(decode_encryption_key(generate_key()))
    plain = b"".join(
        Download(backups.store, row.store_key, rotated, row.id, expected_sha256=row.sha256)
    )
    with tarfile.open(fileobj=io.BytesIO(plain)) as tar:
        assert tar.extractfile("./a").read() == b"kept"  # type: ignore[union-attr]
    with pytest.raises(Exception, match="key"):  # a key ring without the new key cannot open it
        Download(backups.store, row.store_key, new_only, row.id, expected_sha256=row.sha256)


def test_a_daily_plan_backs_its_agents_up_and_keeps_the_newest(
    fake_api: Api, fake_runtime: FakeRuntime
) -> None:
    from datetime import timedelta

    owner, agent_id = running_agent(fake_api, fake_runtime, {"a": b"1"})
    running_agent(fake_api, fake_runtime, {}, plan="team")  # never scheduled: not on pro
    admin = fake_api.admin()
    change = fake_api.client.patch(
        "/api/admin/plans/pro/backups",
        json={"backupSchedule": "daily", "backupKeep": 2},
        headers=admin,
    )
    assert change.status_code == 200, change.text
    assert change.json()["backupSchedule"] == "daily" and change.json()["backupKeep"] == 2
    assert (
        fake_api.client.patch(
            "/api/admin/plans/pro/backups", json={"backupSchedule": "hourly"}, headers=admin
        ).status_code
        == 422
    )
    manual = take(fake_api, owner, agent_id)  # the owner's own: never pruned by the schedule
    schedule = fake_api.context.schedule

    def scheduled() -> list[dict]:
        listed = fake_api.client.get(f"/api/agents/{agent_id}/backups", headers=owner).json()
        return [b for b in listed["backups"] if b["kind"] == "scheduled"]

    def a_day_passes() -> None:
        from sqlalchemy import select

        from clawhq.db.backups import AgentBackup

        with fake_api.context.sessions.begin() as session:
            for row in session.scalars(select(AgentBackup)):
                row.created_at -= timedelta(days=1)

    for _ in range(4):
        assert schedule.tick() == [agent_id]  # not the other plan's agent
        for row in scheduled():
            wait_backup(fake_api, owner, agent_id, row["id"], status="READY")
        released(fake_api, agent_id)
        assert schedule.tick() == []  # not due again the same day
        a_day_passes()
    assert len(scheduled()) == 2  # pruned to backupKeep (the fourth day's two newest)
    listed = fake_api.client.get(f"/api/agents/{agent_id}/backups", headers=owner).json()
    assert manual["id"] in [b["id"] for b in listed["backups"]]
