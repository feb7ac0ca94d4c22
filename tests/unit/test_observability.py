"""Metrics, history, logs, stats and progress through the API, over the in-memory runtime."""

from __future__ import annotations

import json
import logging
import re

import pytest

from clawhq.observability.logs import JsonFormatter
from tests.conftest import Api, running_app
from tests.doubles.runtime import FakeRuntime
from tests.unit.test_api_agents import wait_status


def metric(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf"^{re.escape(name)}{{{re.escape(wanted)}}} (\S+)$" if labels else rf"^{name} (\S+)$"
    found = re.search(pattern, text, re.MULTILINE)
    assert found, f"{name}{{{wanted}}} not in metrics"
    return float(found.group(1))


def deployed(api: Api) -> tuple[dict[str, str], dict]:
    me = api.user()
    agent = api.agent(me)
    api.client.post(f"/api/agents/{agent['id']}/deploy", headers=me)
    return me, wait_status(api, me, agent["id"], "RUNNING")


def test_metrics_count_what_happened(fake_api: Api) -> None:
    me, agent = deployed(fake_api)
    fake_api.client.get(f"/api/agents/{agent['id']}", headers=me)
    text = fake_api.client.get("/metrics").text
    assert (
        metric(text, "clawhq_deploy_duration_seconds_count", kind="deploy", outcome="running") == 1
    )
    assert metric(text, "clawhq_agents", status="RUNNING") == 1
    assert metric(text, "clawhq_agents", status="STOPPED") == 0
    assert metric(text, "clawhq_port_pool_ports", state="in_use") == 1
    assert metric(text, "clawhq_port_pool_ports", state="free") == 99
    assert metric(text, "clawhq_containers_created_total") == 1
    route = "/api/agents/{agent_id}"
    assert metric(text, "clawhq_http_requests_total", method="GET", route=route, status="200") >= 1
    assert "clawhq_http_request_duration_seconds_bucket" in text
    fake_api.client.delete(f"/api/agents/{agent['id']}", headers=me)
    assert metric(fake_api.client.get("/metrics").text, "clawhq_containers_removed_total") == 1


def test_metrics_need_the_token_when_one_is_set(settings, fake_runtime) -> None:
    locked = settings.model_copy(update={"supervise": False})
    locked = locked.model_copy(
        update={"metrics_token": __import__("pydantic").SecretStr("m3tr1cs")}
    )
    with running_app(locked, fake_runtime) as api:
        assert api.client.get("/metrics").status_code == 401
        ok = api.client.get("/metrics", headers={"Authorization": "Bearer m3tr1cs"})
        assert ok.status_code == 200
        assert "clawhq_agents" in ok.text


def test_history_tells_the_lifecycle(fake_api: Api, fake_runtime: FakeRuntime) -> None:
    me, agent = deployed(fake_api)
    fake_api.client.post(f"/api/agents/{agent['id']}/stop", headers=me)
    body = fake_api.client.get(f"/api/agents/{agent['id']}/events", headers=me).json()
    kinds = [e["kind"] for e in reversed(body["events"])]
    assert kinds == [
        "created",
        "deploying",
        "port_leased",
        "container_created",
        "container_started",
        "started",
        "stopping",
        "stopped",
    ]
    page = fake_api.client.get(f"/api/agents/{agent['id']}/events?limit=3", headers=me).json()
    assert len(page["events"]) == 3
    older = fake_api.client.get(
        f"/api/agents/{agent['id']}/events?limit=3&before={page['nextBefore']}", headers=me
    ).json()
    assert [e["kind"] for e in older["events"]] == [
        "container_started",
        "container_created",
        "port_leased",
    ]


def test_failures_are_in_the_history_with_their_reason(
    fake_api: Api, fake_runtime: FakeRuntime
) -> None:
    fake_api.context.controller.prober.set_probe(lambda url: False)
    me = fake_api.user()
    agent = fake_api.agent(me)
    body = fake_api.client.post(f"/api/agents/{agent['id']}/deploy", headers=me).json()
    fake_runtime.crash(body["containerId"], exit_code=137, oom=True)
    wait_status(fake_api, me, agent["id"], "ERROR")
    events = fake_api.client.get(f"/api/agents/{agent['id']}/events", headers=me).json()["events"]
    assert events[0]["kind"] == "failed"
    assert "out of memory" in events[0]["message"]


def test_logs_and_stats(fake_api: Api, fake_runtime: FakeRuntime) -> None:
    me = fake_api.user()
    agent = fake_api.agent(me)
    early = fake_api.client.get(f"/api/agents/{agent['id']}/logs", headers=me)
    assert early.status_code == 409
    assert early.json()["code"] == "agent_not_deployed"
    fake_api.client.post(f"/api/agents/{agent['id']}/deploy", headers=me)
    running = wait_status(fake_api, me, agent["id"], "RUNNING")
    fake_runtime.written_logs[running["containerId"]] = [f"line {i}" for i in range(5)]

    logs = fake_api.client.get(f"/api/agents/{agent['id']}/logs?tail=2", headers=me).json()
    assert logs == {"lines": ["line 3", "line 4"]}
    stats = fake_api.client.get(f"/api/agents/{agent['id']}/stats", headers=me).json()
    fake_runtime.crash(running["containerId"])  # so the followed stream ends
    with fake_api.client.stream(
        "GET", f"/api/agents/{agent['id']}/logs?tail=3&follow=true", headers=me
    ) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        body = "".join(stream.iter_text())
    assert body.count("data: ") == 4
    assert 'data: "line 2"' in body
    assert "event: end" in body

    assert stats["cpuPercent"] == 12.5
    assert stats["memoryLimitBytes"] == 64 * 1024**2
    assert stats["pids"] == 3
    assert set(stats) >= {"memoryBytes", "memoryPercent", "networkRxBytes", "networkTxBytes"}
    too_many = fake_api.client.get(f"/api/agents/{agent['id']}/logs?tail=100000", headers=me)
    assert too_many.status_code == 422


def test_progress_streams_the_deploy_until_ready(fake_api: Api) -> None:
    me, agent = deployed(fake_api)
    with fake_api.client.stream("GET", f"/api/agents/{agent['id']}/progress", headers=me) as s:
        body = "".join(s.iter_text())
    events = [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]
    steps = [e["progress"] for e in events[:-1]]
    assert steps == sorted(steps)
    assert steps[0] == 10
    assert steps[-1] == 100
    assert events[-2]["ready"] is True
    assert events[-1] == {"status": "RUNNING"}


def test_json_logs_carry_ids_and_never_secrets(fake_api: Api, fake_runtime: FakeRuntime) -> None:
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Collect()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        planted = "sk-ant-PLANTED-0xDEADBEEF-key"
        me = fake_api.user()
        agent = fake_api.agent(me, apiKey=planted)
        fake_runtime.fail["start"] = __import__("clawhq.errors").errors.EngineError("boom")
        fake_api.client.post(f"/api/agents/{agent['id']}/deploy", headers=me)
        del fake_runtime.fail["start"]
        fake_api.client.post("/api/agents", json={"name": "", "apiKey": planted + " x"}, headers=me)
        reply = fake_api.client.get(
            f"/api/agents/{agent['id']}", headers={**me, "X-Request-ID": "req-42"}
        )
        assert reply.headers["x-request-id"] == "req-42"
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    entries = [json.loads(line) for line in lines]
    assert all(planted not in line for line in lines)
    access = [
        e for e in entries if e["logger"] == "clawhq.access" and e.get("request_id") == "req-42"
    ]
    assert access, entries
    assert access[0]["user_id"] == me["X-User-Id"]
    assert access[0]["agent_id"] == agent["id"]
    assert access[0]["message"].startswith("GET /api/agents/{agent_id} 200")
    failure = [e for e in entries if "failed to start" in e["message"]]
    assert failure
    assert failure[0]["agent_id"] == agent["id"]


@pytest.mark.parametrize("before_ns", [0, 5_000_000])
def test_cpu_percent_from_two_samples(before_ns: int) -> None:
    from clawhq.runtime import ContainerStats
    from clawhq.services.usage import cpu_percent

    before = ContainerStats(
        0, 0, 0, 0, 0, 0, cpu_usage_ns=before_ns, system_usage_ns=1_000_000_000, online_cpus=2
    )
    after = ContainerStats(
        0,
        0,
        0,
        0,
        0,
        0,
        cpu_usage_ns=before_ns + 250_000_000,
        system_usage_ns=2_000_000_000,
        online_cpus=2,
    )
    assert cpu_percent(before, after) == 50.0
