"""Workspace caps over the in-memory runtime: the plan's size reaches the spec, production
fails closed without caps, stats and metrics show the use (the kernel's side is in
tests/integration/test_disks.py)."""

from __future__ import annotations

from collections.abc import Callable

from clawhq.db.models import Plan
from clawhq.runtime.docker_engine import DockerRuntime
from clawhq.settings import Settings
from tests.conftest import Api, running_app
from tests.doubles.runtime import FakeRuntime
from tests.unit.test_observability import metric

GIB = 1024**3
MIB = 1024**2


def healthy(url: str) -> bool:
    return True


def deploy(api: Api, plan: str = "free") -> tuple[dict[str, str], str]:
    me = api.user(plan=plan)
    agent = api.agent(me)
    reply = api.client.post(f"/api/agents/{agent['id']}/deploy", headers=me)
    assert reply.status_code == 202, reply.text
    return me, agent["id"]


def volume(agent_id: str) -> str:
    return f"clawhq-workspace-{agent_id}"


def test_each_workspace_gets_its_plans_cap_or_the_default(
    make_settings: Callable[..., Settings], fake_runtime: FakeRuntime
) -> None:
    settings = make_settings(agent_disk="1g", supervise=False)
    with running_app(settings, fake_runtime, probe=healthy) as api:
        with api.context.sessions.begin() as session:
            plan = session.get(Plan, "pro")
            assert plan is not None
            plan.agent_disk = 5 * GIB
        _, mine = deploy(api, "free")
        _, theirs = deploy(api, "pro")
        assert fake_runtime.disks[volume(mine)] == 1 * GIB
        assert fake_runtime.disks[volume(theirs)] == 5 * GIB
        # The cap is the workspace's, not the container's: it changes no config hash.
        spec = next(s for s in fake_runtime.specs.values() if s.volume == volume(theirs))
        assert spec.disk_bytes == 5 * GIB
        from dataclasses import replace

        assert replace(spec, disk_bytes=None).config_hash() == spec.config_hash()


def test_off_means_plain_volumes(
    make_settings: Callable[..., Settings], fake_runtime: FakeRuntime
) -> None:
    with running_app(
        make_settings(agent_disk="off", supervise=False), fake_runtime, probe=healthy
    ) as api:
        _, agent_id = deploy(api)
        assert volume(agent_id) in fake_runtime.volumes and fake_runtime.disks == {}


def test_production_starts_no_agent_without_a_cap(
    make_settings: Callable[..., Settings], fake_runtime: FakeRuntime
) -> None:
    fake_runtime.disk_problem = "ClawHQ does not run as root (loop mounts need it)"
    settings = make_settings(env="production", firewall="off", supervise=False)
    with running_app(settings, fake_runtime, probe=healthy) as api:
        me = api.user()
        agent = api.agent(me)
        reply = api.client.post(f"/api/agents/{agent['id']}/deploy", headers=me)
        assert reply.status_code == 503, reply.text
        assert reply.json()["code"] == "disk_quota_unavailable"
        assert "not run as root" in reply.json()["detail"]
        assert "CLAWHQ_AGENT_DISK=off" in reply.json()["detail"]
        body = api.client.get(f"/api/agents/{agent['id']}", headers=me).json()
        assert body["status"] == "STOPPED" and body["containerPort"] is None  # nothing changed
        assert fake_runtime.containers == {} and fake_runtime.volumes == set()


def test_production_runs_without_caps_only_when_told_to(
    make_settings: Callable[..., Settings], fake_runtime: FakeRuntime
) -> None:
    fake_runtime.disk_problem = "no loop devices"
    settings = make_settings(env="production", firewall="off", agent_disk="off", supervise=False)
    with running_app(settings, fake_runtime, probe=healthy) as api:
        _, agent_id = deploy(api)
        assert volume(agent_id) in fake_runtime.volumes and fake_runtime.disks == {}


def test_development_falls_back_to_a_plain_volume(
    make_settings: Callable[..., Settings], fake_runtime: FakeRuntime, caplog
) -> None:  # type: ignore[no-untyped-def]
    fake_runtime.disk_problem = "no loop devices"
    with running_app(make_settings(supervise=False), fake_runtime, probe=healthy) as api:
        _, agent_id = deploy(api)
        assert volume(agent_id) in fake_runtime.volumes and fake_runtime.disks == {}
    assert "workspaces get no disk cap: no loop devices" in caplog.text


def test_stats_and_metrics_show_the_disk(fake_api: Api, fake_runtime: FakeRuntime) -> None:
    me, agent_id = deploy(fake_api)
    fake_runtime.disk_used[volume(agent_id)] = 300 * MIB
    stats = fake_api.client.get(f"/api/agents/{agent_id}/stats", headers=me).json()
    assert stats["diskUsedBytes"] == 300 * MIB
    assert stats["diskSizeBytes"] == 2 * GIB  # CLAWHQ_AGENT_DISK's default
    assert stats["diskFreeBytes"] == 2 * GIB - 300 * MIB
    usage = fake_api.context.usage
    assert usage is not None
    usage.sweep()
    text = fake_api.client.get("/metrics").text
    labels = {"agent_id": agent_id, "user_id": me["X-User-Id"]}
    assert metric(text, "clawhq_agent_disk_used_bytes", **labels) == 300 * MIB
    assert metric(text, "clawhq_agent_disk_size_bytes", **labels) == 2 * GIB

    fake_runtime.disks.clear()  # a plain volume: no figures, rather than the host's
    stats = fake_api.client.get(f"/api/agents/{agent_id}/stats", headers=me).json()
    assert stats["diskUsedBytes"] is None and stats["diskSizeBytes"] is None


def test_a_remote_engine_gets_no_disks() -> None:
    runtime = DockerRuntime("tcp://127.0.0.1:9", timeout=1)
    assert "not on ClawHQ's host" in (runtime.disk_support() or "")
    runtime.close()
