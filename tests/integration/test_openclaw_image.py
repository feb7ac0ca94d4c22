"""The real OpenClaw image: built without a registry, deployed through ClawHQ's API.

Slow (the first build makes a Debian root filesystem and installs openclaw from npm; later runs
reuse the cache), and never talks to anything off this machine: no channel is configured where
the gateway has a network, the API key is fake, heartbeats go to a closed loopback port, and
the config checks run with no network at all.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import unavailable
from tests.integration.helpers import (
    containers_of,
    count_leases,
    exec_in,
    sdk,
    wait_status,
)

OPENCLAW_TEST_TAG = "clawhq-openclaw:test"
PORTS = "19800-19899"
FAKE_KEY = "sk-ant-fake-0123456789"
HARDENING: dict[str, Any] = {
    "read_only": True,
    "tmpfs": {"/tmp": "rw,noexec,nosuid,size=64m"},
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges:true"],
    "user": "1001:1001",
    "init": True,
    "pids_limit": 256,
    "mem_limit": "1g",
    "network_mode": "none",
}

# The environment of the gateway process (the entrypoint's child, which renames itself
# `openclaw-gateway`), one variable a line.
GATEWAY_ENV = (
    "for p in /proc/[0-9]*; do "
    "tr '\\0' ' ' < $p/cmdline 2>/dev/null | grep -q '^openclaw-gateway' "
    "&& tr '\\0' '\\n' < $p/environ; done"
)

# The first test also builds the image (about two minutes from a cold cache).
pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]


@pytest.fixture(scope="session")
def openclaw_image(docker_runtime: Any) -> str:
    """The production image, built through the registry-less path (cached between runs)."""
    from clawhq.cli.images import build_openclaw
    from clawhq.errors import ConfigError

    try:
        build_openclaw(docker_runtime, OPENCLAW_TEST_TAG)
    except ConfigError as exc:
        if "is not installed" in exc.message or "needs root" in exc.message:
            unavailable("the OpenClaw image build", exc.message)
        raise
    return OPENCLAW_TEST_TAG


@pytest.fixture
def scratch_volume() -> Iterator[str]:
    name = f"clawhq-test-openclaw-{uuid.uuid4().hex[:10]}"
    sdk().volumes.create(name)
    yield name
    sdk().volumes.get(name).remove(force=True)


def run_image(image: str, volume: str, env: dict[str, str], *args: str) -> tuple[int, str]:
    """Run the image to completion, hardened like ClawHQ's agents but with no network."""
    container = sdk().containers.run(
        image,
        list(args),
        detach=True,
        environment=env,
        volumes={volume: {"bind": "/home/openclaw", "mode": "rw"}},
        labels={"clawhq.test": "openclaw-image"},
        **HARDENING,
    )
    try:
        code = int(container.wait(timeout=120)["StatusCode"])
        return code, container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)


def agent_env(**extra: str) -> dict[str, str]:
    return {
        "HOME": "/home/openclaw",
        "CLAWHQ_MODEL_PROVIDER": "claude",
        "CLAWHQ_MODEL": "claude-sonnet-4-20250514",
        "CLAWHQ_API_KEY": FAKE_KEY,
        "CLAWHQ_CHANNELS": "[]",
        "OPENCLAW_GATEWAY_TOKEN": "gateway-token-0123456789",
        **extra,
    }


def ready(port: int, timeout: float = 90) -> dict[str, Any]:
    """Poll /readyz on the published port until it says ready (bounded)."""
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            reply = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
            body = reply.json()
            if reply.status_code == 200 and body.get("ready") is True:
                return body
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(1)
    raise AssertionError(f"/readyz never said ready: {body}")


def volume_exists(name: str) -> bool:
    return any(v.name == name for v in sdk().volumes.list())


def test_real_gateway_through_the_api(docker_app, openclaw_image: str) -> None:
    """Default limits (1g, half a core), full hardening: deploy, ready, stop/start, delete."""
    with docker_app(
        agent_image=openclaw_image,
        agent_memory="1g",
        port_range=PORTS,
        start_timeout=120,
        startup_poll_interval=0.5,
        stop_timeout=10,
    ) as api:
        me = api.user()
        agent = api.agent(me, apiKey=FAKE_KEY)
        started = time.monotonic()
        reply = api.client.post(f"/api/agents/{agent['id']}/deploy", headers=me)
        assert reply.status_code == 202, reply.text
        body = wait_status(api, me, agent["id"], "RUNNING", "ERROR", timeout=180)
        assert body["status"] == "RUNNING", body.get("lastError")
        # A measurement for the record (docs/openclaw-image.md), never an assertion.
        print(f"deploy -> RUNNING: {time.monotonic() - started:.1f} s")
        container_id, port = body["containerId"], body["containerPort"]
        assert 19800 <= port <= 19899
        assert ready(port)["ready"] is True

        # Hardened as ClawHQ asks; the config on the volume holds references, not secrets.
        assert exec_in(container_id, "id", "-u") == (0, "1001\n")
        assert exec_in(container_id, "touch", "/etc/x")[0] != 0
        code, text = exec_in(container_id, "cat", "/home/openclaw/.openclaw/openclaw.json")
        assert code == 0 and "anthropic/claude-sonnet-4-20250514" in text
        assert FAKE_KEY not in text
        # The gateway gets the key under its provider's name; ClawHQ's copies stay out of it.
        gateway_env = exec_in(container_id, "bash", "-c", GATEWAY_ENV)[1].splitlines()
        assert f"ANTHROPIC_API_KEY={FAKE_KEY}" in gateway_env
        assert not [line for line in gateway_env if line.startswith("CLAWHQ_API_KEY=")]
        assert not [line for line in gateway_env if line.startswith("CLAWHQ_WEBHOOK_TOKEN=")]

        code, _ = exec_in(container_id, "bash", "-c", "echo kept > /home/openclaw/note.txt")
        assert code == 0

        stopped = api.client.post(f"/api/agents/{agent['id']}/stop", headers=me).json()
        assert stopped["status"] == "STOPPED"
        assert sdk().containers.get(container_id).status == "exited"

        assert api.client.post(f"/api/agents/{agent['id']}/start", headers=me).status_code == 202
        again = wait_status(api, me, agent["id"], "RUNNING", "ERROR", timeout=180)
        assert again["status"] == "RUNNING", again.get("lastError")
        assert again["containerId"] == container_id
        assert exec_in(container_id, "cat", "/home/openclaw/note.txt") == (0, "kept\n")
        assert ready(again["containerPort"])["ready"] is True

        assert api.client.delete(f"/api/agents/{agent['id']}", headers=me).status_code == 204
        assert containers_of(agent["id"]) == []
        assert not volume_exists(f"clawhq-workspace-{agent['id']}")
        assert count_leases(api) == 0


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"CLAWHQ_MODEL_PROVIDER": "openai", "CLAWHQ_MODEL": "gpt-5"},
        {"CLAWHQ_MODEL_PROVIDER": "gemini", "CLAWHQ_MODEL": "gemini-2.5-pro"},
        {"CLAWHQ_MODEL_PROVIDER": "deepseek", "CLAWHQ_MODEL": "deepseek-chat"},
        {"CLAWHQ_MODEL_PROVIDER": "grok", "CLAWHQ_MODEL": "grok-4"},
        {
            "CLAWHQ_CHANNELS": '["telegram", "slack"]',
            "TELEGRAM_BOT_TOKEN": "123456:fake",
            "SLACK_BOT_TOKEN": "xoxb-fake",
            "SLACK_APP_TOKEN": "xapp-fake",
        },
    ],
    ids=["claude", "openai", "gemini", "deepseek", "grok", "telegram+slack"],
)
def test_generated_config_passes_the_real_gateways_strict_schema(
    openclaw_image: str, scratch_volume: str, env: dict[str, str]
) -> None:
    code, logs = run_image(openclaw_image, scratch_volume, agent_env(**env), "--check-config")
    assert code == 0, logs
    assert json.loads(logs.strip().splitlines()[-1])["valid"] is True


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CLAWHQ_CHANNELS": '["icq"]'}, 'unknown channel "icq" in CLAWHQ_CHANNELS'),
        ({"CLAWHQ_MODEL_PROVIDER": "mistral"}, 'unknown model provider "mistral"'),
        ({"CLAWHQ_CHANNELS": '["telegram"]'}, "TELEGRAM_BOT_TOKEN is not set"),
    ],
    ids=["unknown-channel", "unknown-provider", "missing-credential"],
)
def test_what_cannot_run_exits_78_and_says_why(
    openclaw_image: str, scratch_volume: str, env: dict[str, str], message: str
) -> None:
    code, logs = run_image(openclaw_image, scratch_volume, agent_env(**env))
    assert code == 78, logs
    assert message in logs
