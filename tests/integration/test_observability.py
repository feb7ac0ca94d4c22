"""Logs, stats and per-user usage read from the real engine."""

from __future__ import annotations

from tests.integration.helpers import deploy_running


def test_real_logs_stats_and_usage(docker_app) -> None:
    with docker_app(stats_interval=0) as api:
        me = api.user()
        agent = api.agent(me)
        running = deploy_running(api, me, agent["id"])

        lines = api.client.get(f"/api/agents/{agent['id']}/logs", headers=me).json()["lines"]
        assert any("starting in mode healthy" in line for line in lines)
        with api.client.stream(
            "GET", f"/api/agents/{agent['id']}/logs?tail=5&follow=true", headers=me
        ) as stream:
            first = next(stream.iter_lines())
        assert first.startswith("data: ")

        stats = api.client.get(f"/api/agents/{agent['id']}/stats", headers=me).json()
        assert stats["memoryLimitBytes"] == 64 * 1024**2
        assert 0 < stats["memoryBytes"] < stats["memoryLimitBytes"]
        assert stats["pids"] >= 1

        from clawhq.services.usage import UsageSampler

        sampler = UsageSampler(api.context.runtime, interval=1)
        sampler.sweep()
        sampler.sweep()
        usage = {user: (cpu, memory) for user, cpu, memory in sampler.by_user()}
        assert usage[me["X-User-Id"]][1] > 0
        assert usage[me["X-User-Id"]][0] >= 0

        api.client.post(f"/api/agents/{agent['id']}/stop", headers=me)
        stopped = api.client.get(f"/api/agents/{agent['id']}/stats", headers=me)
        assert stopped.status_code == 409
        assert stopped.json()["code"] == "agent_not_running"
        assert running["containerId"]
