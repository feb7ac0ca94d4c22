"""`clawhq serve` as an operator runs it: a real server, a real agent posting heartbeats to it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import TEST_IMAGE, TEST_NETWORK, remove_user_containers

CLAWHQ = [sys.executable, "-m", "clawhq"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server_env(tmp_path: Path, database_url: str, test_image: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAWHQ_")}
    env.update(
        {
            "DATABASE_URL": database_url,
            "CLAWHQ_DATA_DIR": str(tmp_path / "data"),
            "CLAWHQ_PORT": str(free_port()),
            "CLAWHQ_AGENT_IMAGE": TEST_IMAGE,
            "CLAWHQ_AGENT_NETWORK": TEST_NETWORK,
            "CLAWHQ_AGENT_MEMORY": "64m",
            "CLAWHQ_PORT_RANGE": "19630-19639",
            "CLAWHQ_STARTUP_POLL_INTERVAL": "0.1",
        }
    )
    return env


@pytest.fixture
def server(server_env: dict[str, str], docker_runtime) -> Iterator[str]:
    log = open(Path(server_env["CLAWHQ_DATA_DIR"]).parent / "serve.log", "w+")  # noqa: SIM115
    proc = subprocess.Popen(
        [*CLAWHQ, "serve"], env=server_env, stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{server_env['CLAWHQ_PORT']}"
    try:
        for _ in range(150):
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, Path(log.name).read_text()
            time.sleep(0.1)
        else:
            raise AssertionError("clawhq serve did not come up:\n" + Path(log.name).read_text())
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLAWHQ, *args], env=env, capture_output=True, text=True, timeout=60)


def test_agent_heartbeats_reach_a_served_clawhq(server: str, server_env, docker_runtime) -> None:
    created = cli(server_env, "users", "create", "op@example.com", "--plan", "pro")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    assert token.startswith("chq_")
    headers = {"Authorization": f"Bearer {token}"}
    user_id = httpx.get(f"{server}/api/auth/me", headers=headers).json()["id"]
    try:
        agent = httpx.post(
            f"{server}/api/agents",
            json={"name": "beat", "apiKey": "sk-test-123456"},
            headers=headers,
        ).json()
        assert (
            httpx.post(f"{server}/api/agents/{agent['id']}/deploy", headers=headers).status_code
            == 202
        )
        body: dict = {}
        for _ in range(300):
            body = httpx.get(f"{server}/api/agents/{agent['id']}", headers=headers).json()
            if body["status"] == "RUNNING" and body["lastHeartbeat"]:
                break
            time.sleep(0.1)
        assert body["status"] == "RUNNING", body
        assert body["lastHeartbeat"] is not None, body  # the container reached the webhook
    finally:
        remove_user_containers(docker_runtime, [user_id])


def test_doctor_reports_each_check(server_env, docker_runtime) -> None:
    assert cli(server_env, "db", "upgrade").returncode == 0
    report = cli(server_env, "doctor")
    assert report.returncode == 0, report.stdout + report.stderr
    for check in ("encryption key", "database", "docker engine", "agent image", "port range"):
        assert check in report.stdout
    broken = cli({**server_env, "CLAWHQ_AGENT_IMAGE": "clawhq-no-such:image"}, "doctor")
    assert broken.returncode == 1
    assert "[FAIL] agent image" in broken.stdout and "clawhq image build" in broken.stdout
