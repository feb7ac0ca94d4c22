"""Capped workspaces against the real engine and kernel (docs/disks.md): an agent that writes
past its cap gets ENOSPC, alone; its disk survives a lost mount (a reboot); deleting it leaves
no image, mount, loop device or volume behind."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from clawhq.errors import EngineError
from clawhq.runtime.disks import HostDisks, mounted_at
from tests.conftest import unavailable
from tests.integration.helpers import (
    deploy_running,
    exec_in,
    sdk,
    volume_exists,
    wait_for,
    wait_restarted,
    wait_status,
)
from tests.unit.test_observability import metric

BB = "/bin/busybox"
MIB = 1024**2
HOME = "/home/openclaw"


@pytest.fixture(autouse=True)
def _disks_possible(tmp_path: Path) -> None:
    problem = HostDisks(tmp_path).support()
    if problem is not None:
        unavailable("capped workspace disks", problem)


def loops_of(image: Path) -> str:
    return subprocess.run(
        ["losetup", "-j", str(image)], capture_output=True, text=True, check=False
    ).stdout.strip()


def write(container_id: str, name: str, mib: int) -> tuple[int, str]:
    return exec_in(
        container_id, BB, "dd", "if=/dev/zero", f"of={HOME}/{name}", "bs=1M", f"count={mib}"
    )


def disk_paths(api: Any, agent_id: str) -> tuple[Path, Path]:
    point = api.context.settings.disk_dir / f"clawhq-workspace-{agent_id}"
    return point, point.with_name(point.name + ".img")


def test_an_agent_past_its_cap_fails_alone_and_leaves_nothing_when_deleted(docker_app) -> None:
    with docker_app(agent_disk="64m") as api:
        me = api.user(plan="pro")
        full, other = api.agent(me), api.agent(me)
        full_id = deploy_running(api, me, full["id"])["containerId"]
        other_id = deploy_running(api, me, other["id"])["containerId"]
        point, image = disk_paths(api, full["id"])
        assert mounted_at(point) is not None and image.stat().st_size == 64 * MIB
        volume = sdk().volumes.get(f"clawhq-workspace-{full['id']}")
        assert volume.attrs["Options"]["device"] == str(point)  # the workspace is the disk

        host = os.statvfs(image.parent)
        host_free = host.f_bavail * host.f_frsize
        code, output = write(full_id, "fill", 100)
        assert code != 0 and "No space left on device" in output, output

        # The host paid at most the cap; the other agent writes on, and so does the full one
        # once it frees room: it failed cleanly and still runs.
        assert image.stat().st_blocks * 512 <= 64 * MIB
        host = os.statvfs(image.parent)
        assert host_free - host.f_bavail * host.f_frsize < 80 * MIB
        assert write(other_id, "fine", 8)[0] == 0
        assert exec_in(full_id, BB, "rm", f"{HOME}/fill")[0] == 0
        assert write(full_id, "again", 4)[0] == 0
        assert wait_status(api, me, full["id"], "RUNNING")

        exec_in(full_id, BB, "dd", "if=/dev/zero", f"of={HOME}/fill", "bs=1M", "count=30")
        stats = api.client.get(f"/api/agents/{full['id']}/stats", headers=me).json()
        assert 30 * MIB <= stats["diskUsedBytes"] <= stats["diskSizeBytes"] <= 64 * MIB, stats
        assert stats["diskFreeBytes"] < stats["diskSizeBytes"] - 30 * MIB
        assert api.context.usage is not None
        api.context.usage.sweep()
        text = api.client.get("/metrics").text
        labels = {"agent_id": full["id"], "user_id": me["X-User-Id"]}  # sorted, as exposed
        assert metric(text, "clawhq_agent_disk_used_bytes", **labels) >= 30 * MIB
        assert metric(text, "clawhq_agent_disk_size_bytes", **labels) <= 64 * MIB

        reply = api.client.delete(f"/api/agents/{full['id']}?keepWorkspace=false", headers=me)
        assert reply.status_code == 204, reply.text
        assert not volume_exists(f"clawhq-workspace-{full['id']}")
        assert mounted_at(point) is None and not point.exists() and not image.exists()
        assert loops_of(image) == ""
        assert write(other_id, "still-fine", 1)[0] == 0  # the other agent did not notice


def unmount_when_free(point: Path) -> None:
    """What a reboot does to the disk (once the engine has let go of its container)."""
    wait_for(
        lambda: subprocess.run(["umount", str(point)], capture_output=True).returncode == 0,
        timeout=20,
        what=f"unmount {point}",
    )


def test_a_lost_mount_comes_back_before_the_next_start(docker_app) -> None:
    """After a reboot nothing is mounted: a new container (a start after a stop) and the
    same container started again (a restart after a crash) both get the disk mounted again,
    with the agent's files; until then the mount point takes no write at all."""
    with docker_app(agent_disk="32m", restart_backoff_initial=3) as api:
        me = api.user()
        agent = api.agent(me)
        first = deploy_running(api, me, agent["id"])["containerId"]
        assert exec_in(first, BB, "sh", "-c", f"echo kept > {HOME}/note")[0] == 0
        assert api.client.post(f"/api/agents/{agent['id']}/stop", headers=me).status_code < 300
        wait_status(api, me, agent["id"], "STOPPED")
        point, image = disk_paths(api, agent["id"])
        unmount_when_free(point)
        assert oct(point.stat().st_mode & 0o777) == "0o0" and point.stat().st_uid == 0

        assert api.client.post(f"/api/agents/{agent['id']}/start", headers=me).status_code == 202
        again = wait_status(api, me, agent["id"], "RUNNING")["containerId"]
        assert mounted_at(point) is not None
        assert exec_in(again, BB, "cat", f"{HOME}/note") == (0, "kept\n")

        sdk().containers.get(again).kill()  # a crash: the supervisor starts it again
        wait_for(lambda: sdk().containers.get(again).status == "exited", what="the crash")
        unmount_when_free(point)
        body = wait_restarted(api, me, agent["id"])
        assert body["containerId"] == again and mounted_at(point) is not None
        assert exec_in(again, BB, "cat", f"{HOME}/note") == (0, "kept\n")

        reply = api.client.delete(f"/api/agents/{agent['id']}?keepWorkspace=false", headers=me)
        assert reply.status_code == 204
        assert not image.exists() and loops_of(image) == ""


def test_a_workspace_made_before_disks_stays_a_plain_volume(docker_app) -> None:
    with docker_app(agent_disk="32m") as api:
        me = api.user()
        agent = api.agent(me)
        name = f"clawhq-workspace-{agent['id']}"
        sdk().volumes.create(name, labels={"clawhq.user-id": me["X-User-Id"]})
        deploy_running(api, me, agent["id"])
        assert not sdk().volumes.get(name).attrs.get("Options")
        point, image = disk_paths(api, agent["id"])
        assert not image.exists() and mounted_at(point) is None
        stats = api.client.get(f"/api/agents/{agent['id']}/stats", headers=me).json()
        assert stats["diskUsedBytes"] is None and stats["diskSizeBytes"] is None


def test_disks_grow_never_shrink_and_a_failed_make_leaves_nothing(tmp_path: Path) -> None:
    disks = HostDisks(tmp_path / "disks")
    try:
        point = disks.ensure("clawhq-workspace-grow", 32 * MIB, "1001:1001")
        assert point.stat().st_uid == 1001
        (point / "kept").write_text("kept")
        small = disks.usage(point)
        assert small is not None and small.size_bytes <= 32 * MIB
        disks.ensure("clawhq-workspace-grow", 48 * MIB, "1001:1001")
        grown = disks.usage(point)
        assert grown is not None and grown.size_bytes > small.size_bytes
        assert (point / "kept").read_text() == "kept"
        disks.ensure("clawhq-workspace-grow", 16 * MIB, "1001:1001")  # shrinking: kept as it is
        assert disks.image_of(point).stat().st_size == 48 * MIB

        with pytest.raises(EngineError, match=r"mkfs\.ext4"):
            disks.ensure("clawhq-workspace-tiny", 4096, "1001:1001")  # too small for ext4
        assert sorted(p.name for p in disks.root.iterdir()) == [
            ".lock",
            "clawhq-workspace-grow",
            "clawhq-workspace-grow.img",
        ]  # no half-made image, no mount point
    finally:
        for name in ("clawhq-workspace-grow", "clawhq-workspace-tiny"):
            disks.remove(disks.root / name)
    assert not disks.image_of(point).exists() and mounted_at(point) is None
