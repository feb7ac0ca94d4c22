"""`clawhq serve` as an operator runs it: a real server, a real agent posting heartbeats to it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import remove_user_containers
from tests.integration.served import Served, cli, serve_env


@pytest.fixture
def env(tmp_path: Path, database_url: str, test_image: str) -> dict[str, str]:
    return serve_env(tmp_path / "data", database_url, port_range="19630-19639")


@pytest.fixture
def server(env: dict[str, str], tmp_path: Path, docker_runtime) -> Iterator[Served]:
    served = Served(env, tmp_path / "serve.log").start()
    yield served
    served.stop()


def test_agent_heartbeats_reach_a_served_clawhq(server: Served, env, docker_runtime) -> None:
    created = cli(env, "users", "create", "op@example.com", "--plan", "pro")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    assert token.startswith("chq_")
    headers = {"Authorization": f"Bearer {token}"}
    base = server.base
    user_id = httpx.get(f"{base}/api/auth/me", headers=headers).json()["id"]
    try:
        agent = httpx.post(
            f"{base}/api/agents", json={"name": "beat", "apiKey": "sk-test-123456"}, headers=headers
        ).json()
        reply = httpx.post(f"{base}/api/agents/{agent['id']}/deploy", headers=headers)
        assert reply.status_code == 202
        body: dict = {}
        for _ in range(300):
            body = httpx.get(f"{base}/api/agents/{agent['id']}", headers=headers).json()
            if body["status"] == "RUNNING" and body["lastHeartbeat"]:
                break
            time.sleep(0.1)
        assert body["status"] == "RUNNING", body
        assert body["lastHeartbeat"] is not None, body  # the container reached the webhook
    finally:
        remove_user_containers(docker_runtime, [user_id])


def test_doctor_reports_each_check(env, docker_runtime) -> None:
    assert cli(env, "db", "upgrade").returncode == 0
    report = cli(env, "doctor")
    assert report.returncode == 0, report.stdout + report.stderr
    for check in ("encryption key", "database", "docker engine", "agent image", "port range"):
        assert check in report.stdout
    broken = cli({**env, "CLAWHQ_AGENT_IMAGE": "clawhq-no-such:image"}, "doctor")
    assert broken.returncode == 1
    assert "[FAIL] agent image" in broken.stdout
    assert "clawhq image build" in broken.stdout
