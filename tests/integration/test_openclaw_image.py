"""The real OpenClaw image: built without a registry, run with docker and through ClawHQ's API.

Slow (the first build makes a Debian root filesystem and installs openclaw from npm; later runs
reuse the cache), and never talks to anything off this machine: no channel is configured where
the gateway has a network, the API key is fake, heartbeats go to a closed loopback port, and
the config checks run with no network at all.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.integration.control_ui import control_ui_connect
from tests.integration.helpers import (
    delete_leaves_nothing,
    exec_in,
    run_container,
    scratch_bridge,
    sdk,
    wait_status,
)
from tests.standins.model import StandIn, serving_model

PORTS = "19800-19899"
FAKE_KEY = "sk-ant-fake-0123456789"
IDENTITY = "proxy-identity-0123456789abcdefghijklmnopqrs"
ORIGIN = "http://127.0.0.1:8000"
BASE_PATH = "/agents/a1"
#: ClawHQ's defaults for a real gateway (1g, a 2-minute start), on this module's ports.
REAL_GATEWAY = {
    "agent_memory": "2g",
    "port_range": PORTS,
    "start_timeout": 120,
    "startup_poll_interval": 0.5,
    "stop_timeout": 10,
}
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


@pytest.fixture
def scratch_volume() -> Iterator[str]:
    name = f"clawhq-test-openclaw-{uuid.uuid4().hex[:10]}"
    sdk().volumes.create(name)
    yield name
    sdk().volumes.get(name).remove(force=True)


def run_image(image: str, volume: str, env: dict[str, str], *args: str) -> tuple[int, str]:
    """Run the image to completion, hardened like ClawHQ's agents but with no network."""
    container = run_container(
        image,
        list(args),
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
        "OPENCLAW_GATEWAY_PASSWORD": "gateway-password-0123456789",
        "CLAWHQ_PROXY_ADDRESSES": "172.18.0.1",
        "CLAWHQ_PROXY_IDENTITY": IDENTITY,
        "CLAWHQ_PUBLIC_ORIGIN": ORIGIN,
        "CLAWHQ_BASE_PATH": BASE_PATH,
        **extra,
    }


def ready(port: int, timeout: float = 180) -> dict[str, Any]:
    """Poll /readyz on the published port until it says ready (bounded; readiness also
    needs a responsive event loop, which a loaded machine can delay)."""
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            # From the host the gateway sees its trusted proxy's address: it wants a client.
            reply = httpx.get(
                f"http://127.0.0.1:{port}/readyz",
                headers={"X-Forwarded-For": "192.0.2.10"},
                timeout=5,
            )
            body = reply.json()
            if reply.status_code == 200 and body.get("ready") is True:
                return body
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(1)
    raise AssertionError(f"/readyz never said ready: {body}")


def test_real_gateway_through_the_api(docker_app, openclaw_image: str) -> None:
    """Default limits (1g, half a core), full hardening: deploy, ready, stop/start, delete."""
    with docker_app(agent_image=openclaw_image, **REAL_GATEWAY) as api:
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
        # ... which is its ClawHQ LLM token: the provider key stays with ClawHQ.
        assert [line for line in gateway_env if line.startswith("ANTHROPIC_API_KEY=chqllm_")]
        assert not [line for line in gateway_env if FAKE_KEY in line]
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
        assert again["containerId"] != container_id  # a new container, a new LLM token
        assert exec_in(again["containerId"], "cat", "/home/openclaw/note.txt") == (0, "kept\n")
        assert ready(again["containerPort"])["ready"] is True

        delete_leaves_nothing(api, me, agent["id"])


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
        {"CLAWHQ_CHANNELS": '["discord", "whatsapp"]', "DISCORD_BOT_TOKEN": "fake.discord"},
        *(
            {
                "CLAWHQ_MODEL_PROVIDER": provider,
                "CLAWHQ_MODEL": model,
                "CLAWHQ_LLM_BASE_URL": f"http://172.18.0.1:8000/llm/{gateway}",
            }
            for provider, model, gateway in (
                ("claude", "claude-sonnet-4-6", "anthropic"),
                ("openai", "gpt-5", "openai"),
                ("gemini", "gemini-2.5-pro", "google"),
                ("deepseek", "deepseek-chat", "deepseek"),
                ("grok", "grok-4", "xai"),
            )
        ),
    ],
    ids=[
        "claude",
        "openai",
        "gemini",
        "deepseek",
        "grok",
        "telegram+slack",
        "discord+whatsapp",
        "llm-claude",
        "llm-openai",
        "llm-gemini",
        "llm-deepseek",
        "llm-grok",
    ],
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


# -- channel plugins: registered, trusted and started, with no network ------------------------

# The gateway's own view of its channels (`channels.status`), from inside the container.
CHANNEL_STATUS = """
import { gatewayRpc } from "/opt/clawhq/reporter.mjs";
const password = process.env.OPENCLAW_GATEWAY_PASSWORD;
const status = await gatewayRpc(18789, password, "channels.status", {});
console.log(JSON.stringify(status.channelAccounts));
"""
# What OpenClaw says when it does not let a plugin run as an official, trusted one.
REFUSALS = (
    "only available for trusted plugins",
    "PluginTrustRefusalError",
    "can't verify where this plugin came from",
    "requires state migration",
    "peer link audit failed",
)


def wait_for_log(container: Any, text: str, timeout: float = 300) -> str:
    """The container's log once it holds ``text`` (bounded; fails if the container exits)."""
    deadline = time.monotonic() + timeout
    logs = ""
    while time.monotonic() < deadline:
        logs = container.logs().decode(errors="replace")
        if text in logs:
            return logs
        container.reload()
        if container.status == "exited":
            break
        time.sleep(2)
    raise AssertionError(f"no {text!r} in the log:\n{logs[-3000:]}")


@pytest.mark.parametrize(
    ("channel", "env", "started"),
    [
        # No network: the provider starts, then fails to reach Discord (past registration).
        (
            "discord",
            {"DISCORD_BOT_TOKEN": "fake.discord.token"},
            "Failed to resolve Discord application id",
        ),
        (
            "slack",
            {"SLACK_BOT_TOKEN": "xoxb-fake", "SLACK_APP_TOKEN": "xapp-fake"},
            "[slack] socket mode failed to start",
        ),
        # Not linked yet (the owner scans a QR code); a token of a channel not listed is kept
        # from the gateway, which would otherwise try to install that channel's plugin.
        ("whatsapp", {"DISCORD_BOT_TOKEN": "fake.discord.token"}, None),
    ],
)
def test_channel_plugin_registers_as_trusted_and_starts_with_no_network(
    openclaw_image: str, scratch_volume: str, channel: str, env: dict[str, str], started: str | None
) -> None:
    container = run_container(
        openclaw_image,
        environment=agent_env(
            CLAWHQ_CHANNELS=json.dumps([channel]),
            CLAWHQ_HEARTBEAT_INTERVAL="0",
            CLAWHQ_USAGE_INTERVAL="0",
            **env,
        ),
        volumes={scratch_volume: {"bind": "/home/openclaw", "mode": "rw"}},
        labels={"clawhq.test": "openclaw-image"},
        # Room for the second Node.js process (the status query) beside the gateway.
        **{**HARDENING, "mem_limit": "2g"},
    )
    try:
        logs = wait_for_log(container, "[gateway] ready")
        listening = re.search(r"http server listening \(\d+ plugins: ([^;)]+)", logs)
        assert listening, logs[-3000:]
        assert channel in listening.group(1).split(", ")
        if started:
            logs = wait_for_log(container, started, timeout=120)
        code, out = exec_in(container.id, "node", "--input-type=module", "-e", CHANNEL_STATUS)
        assert code == 0, out
        account = json.loads(out)[channel][0]
        assert account["configured"] is True and account["enabled"] is True
        if channel == "whatsapp":
            assert account["linked"] is False and account["stateReason"] == "not linked"
        # The gateway's full log (more than the container's) holds no trust refusal.
        code, full = exec_in(container.id, "bash", "-c", "cat /tmp/openclaw/*.log")
        assert code == 0
        container.stop(timeout=30)
        logs = container.logs().decode(errors="replace")
        for refusal in REFUSALS:
            assert refusal not in logs and refusal not in full, refusal
    finally:
        container.remove(force=True)

    # The gateway has taken the install record into its state database on the volume: the
    # config now passes `config validate` with the channel checked against the plugin's own
    # schema, and without a "plugin not installed" warning.
    listed = agent_env(CLAWHQ_CHANNELS=json.dumps([channel]), **env)
    code, logs = run_image(openclaw_image, scratch_volume, listed, "--check-config")
    assert code == 0, logs
    result = json.loads(logs.strip().splitlines()[-1])
    assert result["valid"] is True
    assert not [w for w in result.get("warnings", []) if "not installed" in w["message"]], result


# -- usage, from a real agent turn against a model served inside the container -----------------

MOCK_MODEL = """
import http from "node:http";
import { appendFileSync } from "node:fs";
const usage = { prompt_tokens: 100, completion_tokens: 5, total_tokens: 105 };
http.createServer((req, res) => {
  let body = "";
  req.on("data", (chunk) => (body += chunk));
  req.on("end", () => {
    if (req.url === "/hook") {
      const line = JSON.stringify({ auth: req.headers.authorization, body });
      appendFileSync("/tmp/hooks.jsonl", line + "\\n");
      res.writeHead(202);
      return res.end("{}");
    }
    const base = { id: "c1", created: 1, model: "mock-1" };
    const message = { role: "assistant", content: "Hello from the mock." };
    if (JSON.parse(body || "{}").stream) {
      res.writeHead(200, { "content-type": "text/event-stream" });
      const chunk = { ...base, object: "chat.completion.chunk" };
      const send = (o) => res.write(`data: ${JSON.stringify({ ...chunk, ...o })}\\n\\n`);
      send({ choices: [{ index: 0, delta: message, finish_reason: null }] });
      send({ choices: [{ index: 0, delta: {}, finish_reason: "stop" }], usage });
      return res.end("data: [DONE]\\n\\n");
    }
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ ...base, object: "chat.completion", usage,
      choices: [{ index: 0, message, finish_reason: "stop" }] }));
  });
}).listen(9999, "127.0.0.1");
"""

MOCK_PROVIDER = {
    "baseUrl": "http://127.0.0.1:9999/v1",
    "apiKey": "mock-key",
    "api": "openai-completions",
    "models": [{"id": "mock-1", "name": "Mock", "input": ["text"], "contextWindow": 32000}],
}

# Runs as the container's command: the mock model (also the webhook receiver), the gateway from
# a config that adds the mock provider, one agent turn, then the reporter for a few rounds.
USAGE_SCRIPT = """
set -e
node /t/mock.mjs &
mkdir -p ~/.openclaw && cp /t/openclaw.json ~/.openclaw/openclaw.json
openclaw gateway run --bind lan --port 18789 > /tmp/gateway.log 2>&1 &
for i in $(seq 1 180); do
  bash -c 'exec 3<>/dev/tcp/127.0.0.1/18789' 2>/dev/null && break; sleep 1
done
openclaw agent --agent main --message 'Say hello' > /tmp/turn.log 2>&1
node --input-type=module -e '
  import { startReporter } from "/opt/clawhq/reporter.mjs";
  const stop = startReporter({ url: "http://127.0.0.1:9999/hook", token: "whk-test",
    gatewayPassword: process.env.OPENCLAW_GATEWAY_PASSWORD, port: 18789, heartbeatSeconds: 2,
    usageSeconds: 2, statePath: "/tmp/usage.json" });
  setTimeout(() => { stop(); }, 12000);
'
cat /tmp/hooks.jsonl
"""


def test_reporter_posts_heartbeats_and_usage_from_a_real_agent_turn(
    openclaw_image: str, tmp_path
) -> None:
    """The gateway's sessions.usage, after one turn (100 + 5 tokens, 2 messages), becomes
    exactly one usage webhook; heartbeats carry the webhook token. No network at all."""
    cfg = json.loads(
        run_config_json(openclaw_image, {"CLAWHQ_MODEL_PROVIDER": "openai", "CLAWHQ_MODEL": "x"})
    )
    cfg["agents"]["defaults"]["model"]["primary"] = "mock/mock-1"
    cfg["models"]["providers"] = {"mock": MOCK_PROVIDER}
    (tmp_path / "openclaw.json").write_text(json.dumps(cfg))
    (tmp_path / "mock.mjs").write_text(MOCK_MODEL)
    (tmp_path / "run.sh").write_text(USAGE_SCRIPT)
    tmp_path.chmod(0o755)
    for path in tmp_path.iterdir():
        path.chmod(0o644)
    container = run_container(
        openclaw_image,
        ["/t/run.sh"],
        entrypoint=["bash"],
        environment={"OPENCLAW_GATEWAY_PASSWORD": "gateway-password-0123456789"},
        volumes={str(tmp_path): {"bind": "/t", "mode": "ro"}},
        # The agent turn runs a second OpenClaw process (the CLI) beside the gateway.
        **{
            **HARDENING,
            "mem_limit": "2g",
            "tmpfs": {"/tmp": "rw,size=64m", "/home/openclaw": "uid=1001,gid=1001"},
        },
    )
    try:
        code = int(container.wait(timeout=400)["StatusCode"])
        logs = container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)
    assert code == 0, logs[-3000:]
    hooks = [json.loads(line) for line in logs.splitlines() if line.startswith('{"auth"')]
    assert hooks and all(h["auth"] == "Bearer whk-test" for h in hooks)
    bodies = [json.loads(h["body"]) for h in hooks]
    assert {"type": "heartbeat"} in bodies
    usage = [b for b in bodies if b["type"] == "usage"]
    assert len(usage) == 1, bodies
    assert usage[0]["messages"] == 2 and usage[0]["tokens"] == 105
    assert uuid.UUID(usage[0]["eventId"])


def run_config_json(image: str, env: dict[str, str]) -> str:
    """The config the entrypoint writes for ``env`` (--print-config)."""
    container = run_container(image, ["--print-config"], environment=agent_env(**env), **HARDENING)
    try:
        assert int(container.wait(timeout=60)["StatusCode"]) == 0
        return container.logs(stderr=False).decode()
    finally:
        container.remove(force=True)


def derived_image(docker_runtime: Any, tmp_path: Any, base: str, tag: str, extra: str) -> str:
    """A new image on top of ``base`` (a new image id, for a rollout to move to)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "Dockerfile").write_text(f"FROM {base}\n{extra}\n")
    docker_runtime.build_image(tmp_path, "Dockerfile", tag)
    return tag


def test_real_gateway_rolled_to_a_new_tag_and_back_from_a_broken_one(
    docker_app, docker_runtime: Any, openclaw_image: str, tmp_path: Any
) -> None:
    """The operator's update path on the real image: health-gated, workspace intact, a broken
    release rolled back on the same port."""
    v2 = derived_image(
        docker_runtime,
        tmp_path / "v2",
        openclaw_image,
        "clawhq-openclaw:test-v2",
        'LABEL org.opencontainers.image.version="test-v2"',
    )
    broken = derived_image(
        docker_runtime,
        tmp_path / "broken",
        openclaw_image,
        "clawhq-openclaw:test-broken",
        'ENTRYPOINT ["/bin/sh", "-c", "echo this release is broken; exit 3"]',
    )
    with docker_app(agent_image=openclaw_image, reconcile_interval=2, **REAL_GATEWAY) as api:
        admin = api.admin()
        me = api.user()
        agent_id = api.agent(me, apiKey=FAKE_KEY)["id"]
        api.client.post(f"/api/agents/{agent_id}/deploy", headers=me)
        first = wait_status(api, me, agent_id, "RUNNING", "ERROR", timeout=180)
        assert first["status"] == "RUNNING", first.get("lastError")
        code, _ = exec_in(first["containerId"], "bash", "-c", "echo kept > /home/openclaw/note.txt")
        assert code == 0

        def roll(image: str) -> dict[str, Any]:
            reply = api.client.post(
                "/api/admin/rollouts", json={"image": image, "agents": [agent_id]}, headers=admin
            )
            assert reply.status_code == 201, reply.text
            url = f"/api/admin/rollouts/{reply.json()['id']}"
            deadline = time.monotonic() + 400
            while time.monotonic() < deadline:
                found = api.client.get(url, headers=admin).json()
                if found["finished"]:
                    return found  # type: ignore[no-any-return]
                time.sleep(1)
            raise AssertionError(f"rollout to {image} did not finish")

        assert roll(v2)["state"] == "completed"
        on_v2 = wait_status(api, me, agent_id, "RUNNING", timeout=180)
        assert sdk().containers.get(on_v2["containerId"]).attrs["Config"]["Image"] == v2
        assert on_v2["containerPort"] == first["containerPort"]
        assert exec_in(on_v2["containerId"], "cat", "/home/openclaw/note.txt") == (0, "kept\n")
        assert ready(on_v2["containerPort"])["ready"] is True

        failed = roll(broken)
        assert failed["state"] == "failed", failed
        assert failed["members"][0]["state"] == "rolled_back"
        assert "exited with code 3" in failed["members"][0]["reason"]
        back = wait_status(api, me, agent_id, "RUNNING", timeout=180)
        assert sdk().containers.get(back["containerId"]).attrs["Config"]["Image"] == v2
        assert back["containerPort"] == first["containerPort"]
        assert exec_in(back["containerId"], "cat", "/home/openclaw/note.txt") == (0, "kept\n")
        delete_leaves_nothing(api, me, agent_id)


def test_real_gateway_removed_behind_clawhqs_back_comes_back(
    docker_app, openclaw_image: str
) -> None:
    """Killed outright, a gateway leaves its owner lease in the workspace; the new container
    has the same hostname, so the next gateway sees the lease's owner is gone and starts."""
    with docker_app(agent_image=openclaw_image, reconcile_interval=2, **REAL_GATEWAY) as api:
        me = api.user()
        agent_id = api.agent(me, apiKey=FAKE_KEY)["id"]
        api.client.post(f"/api/agents/{agent_id}/deploy", headers=me)
        first = wait_status(api, me, agent_id, "RUNNING", "ERROR", timeout=180)
        assert first["status"] == "RUNNING", first.get("lastError")
        sdk().containers.get(first["containerId"]).remove(force=True)  # SIGKILL, then gone
        deadline = time.monotonic() + 300
        body: dict[str, Any] = {}
        while time.monotonic() < deadline:
            body = api.client.get(f"/api/agents/{agent_id}", headers=me).json()
            if body["status"] == "RUNNING" and body["containerId"] != first["containerId"]:
                break
            time.sleep(1)
        assert body["status"] == "RUNNING", body.get("lastError")
        assert body["containerId"] != first["containerId"]
        assert ready(body["containerPort"])["ready"] is True
        delete_leaves_nothing(api, me, agent_id)


# -- behind ClawHQ's proxy: trusted-proxy auth, Control UI, /v1 endpoints ------------------------


@pytest.fixture
def bridge() -> Iterator[tuple[str, str]]:
    """A bridge network like ClawHQ's (no traffic between containers): its name and gateway IP,
    the address the host's processes reach its containers from."""
    with scratch_bridge("clawhq-test-proxy", "openclaw-image") as found:
        yield found


@pytest.fixture
def stand_in(bridge: tuple[str, str]) -> Iterator[str]:
    """The stand-in model and webhook on the bridge's gateway address; yields its base URL."""
    with serving_model(bridge[1]) as base:
        yield base


def proxy_headers(**extra: str) -> dict[str, str]:
    """What ClawHQ's proxy sends: its identity, and a forwarded client address that is neither
    loopback nor the proxy's own (the gateway refuses requests it cannot attribute)."""
    return {"X-ClawHQ-Identity": IDENTITY, "X-Forwarded-For": "192.0.2.10", **extra}


def test_real_gateway_behind_clawhqs_proxy(
    openclaw_image: str, scratch_volume: str, bridge: tuple[str, str], stand_in: str
) -> None:
    """Hardened on a bridge network, as ClawHQ runs it, reached from the host like ClawHQ's
    proxy: the Control UI, its WebSocket as the owner, /v1 against a stand-in model on the host,
    usage reported; refused without the proxy's identity."""
    network, proxy_address = bridge
    env = agent_env(
        # DeepSeek: an OpenAI Chat Completions adapter at <base>/chat/completions, what the
        # stand-in serves (each provider's own path: test_openclaw_llm_paths.py).
        CLAWHQ_MODEL_PROVIDER="deepseek",
        CLAWHQ_MODEL="deepseek-chat",
        CLAWHQ_API_KEY="sk-fake-0123456789",
        CLAWHQ_PROXY_ADDRESSES=proxy_address,
        CLAWHQ_LLM_BASE_URL=stand_in,
        CLAWHQ_WEBHOOK_URL=f"{stand_in}/hook",
        CLAWHQ_WEBHOOK_TOKEN="whk-test",
        CLAWHQ_HEARTBEAT_INTERVAL="2",
        CLAWHQ_USAGE_INTERVAL="2",
    )
    container = run_container(
        openclaw_image,
        environment=env,
        hostname="agent-proxy-test",
        volumes={scratch_volume: {"bind": "/home/openclaw", "mode": "rw"}},
        labels={"clawhq.test": "openclaw-image"},
        # An agent turn needs more than ClawHQ's 1 GiB default: it was OOM-killed there.
        **{**HARDENING, "network_mode": network, "mem_limit": "2g"},
    )
    try:
        container.reload()
        ip = container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]
        gateway = f"http://{ip}:18789"
        started = time.monotonic()
        deadline = started + 180
        while time.monotonic() < deadline:
            try:  # /readyz, like ClawHQ's probe: no identity, but an attributable client address
                reply = httpx.get(
                    f"{gateway}/readyz", headers={"X-Forwarded-For": "192.0.2.10"}, timeout=5
                )
                if reply.status_code == 200 and reply.json().get("ready") is True:
                    break
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(1)
        else:
            raise AssertionError(container.logs().decode(errors="replace")[-3000:])
        print(f"container start -> /readyz ready: {time.monotonic() - started:.1f} s")
        assert httpx.get(f"{gateway}/healthz").json() == {"ok": True, "status": "live"}
        # From the proxy's address, a request with no forwarded client is not attributable.
        unattributed = httpx.get(f"{gateway}/readyz")
        assert unattributed.status_code == 403 and "proxy_attribution_required" in unattributed.text

        # 1. The Control UI under the base path; its bootstrap config needs the identity.
        page = httpx.get(f"{gateway}{BASE_PATH}/", headers=proxy_headers())
        assert page.status_code == 200 and f'base-path="{BASE_PATH}"' in page.text
        asset = page.text.split('src="', 1)[1].split('"', 1)[0]
        assert asset.startswith(f"{BASE_PATH}/assets/")
        assert httpx.get(f"{gateway}{asset}", headers=proxy_headers()).status_code == 200
        config_url = f"{gateway}{BASE_PATH}/__openclaw/control-ui-config.json"
        assert httpx.get(config_url, headers=proxy_headers()).json()["basePath"] == BASE_PATH
        for headers in (
            {"X-Forwarded-For": "192.0.2.10"},
            proxy_headers(**{"X-ClawHQ-Identity": "x" * 43}),
        ):
            assert httpx.get(config_url, headers=headers).status_code == 401

        # 2. The WebSocket as the Control UI: owner scopes at once, no pairing step.
        ws_url = f"ws://{ip}:18789{BASE_PATH}"
        hello, results = asyncio.run(
            control_ui_connect(
                ws_url,
                proxy_headers(Origin=ORIGIN),
                ("channels.status", "chat.history", "config.get"),
            )
        )
        assert hello["ok"], hello
        assert hello["payload"]["auth"]["method"] == "trusted-proxy"
        assert {"operator.admin", "operator.read", "operator.write"} <= set(
            hello["payload"]["auth"]["scopes"]
        )
        assert [r["ok"] for r in results] == [True, True, True], results
        for headers, reason in (
            (
                proxy_headers(Origin=ORIGIN, **{"X-ClawHQ-Identity": "x" * 43}),
                "trusted_proxy_user_not_allowed",
            ),
            ({"X-Forwarded-For": "192.0.2.10", "Origin": ORIGIN}, "trusted_proxy_user_missing"),
            (proxy_headers(Origin="http://evil.example"), "CONTROL_UI_ORIGIN_NOT_ALLOWED"),
        ):
            refused, _ = asyncio.run(control_ui_connect(ws_url, headers))
            assert not refused["ok"] and reason in json.dumps(refused["error"]), refused

        # 3. /v1: the identity headers authenticate it; the agent is `model: openclaw`.
        models = httpx.get(f"{gateway}/v1/models", headers=proxy_headers())
        assert models.status_code == 200 and "openclaw" in [m["id"] for m in models.json()["data"]]
        assert (
            httpx.get(f"{gateway}/v1/models", headers={"X-Forwarded-For": "192.0.2.10"}).status_code
            == 401
        )
        body = {
            "model": "openclaw",
            "user": "thread-1",
            "messages": [{"role": "user", "content": "Hi"}],
        }
        reply = httpx.post(
            f"{gateway}/v1/chat/completions", headers=proxy_headers(), json=body, timeout=120
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["choices"][0]["message"]["content"] == StandIn.answer
        streamed = ""
        with httpx.stream(
            "POST",
            f"{gateway}/v1/chat/completions",
            headers=proxy_headers(),
            json={**body, "stream": True},
            timeout=120,
        ) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            for line in stream.iter_lines():
                if line.startswith("data: {"):
                    streamed += json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
        assert streamed == StandIn.answer
        model_calls = [r for r in StandIn.requests if r["path"] == "/chat/completions"]
        assert model_calls and all(r["auth"] == "Bearer sk-fake-0123456789" for r in model_calls)

        # 4. The reporter, on the local password, still reports the turns' usage.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            usage = [
                r for r in StandIn.requests if r["path"] == "/hook" and r.get("type") == "usage"
            ]
            if sum(u["tokens"] for u in usage) >= 2 * 105:
                break
            time.sleep(1)
        assert sum(u["messages"] for u in usage) >= 4, StandIn.requests
        assert all(r["auth"] == "Bearer whk-test" for r in StandIn.requests if r["path"] == "/hook")
    finally:
        container.stop(timeout=10)
        container.remove(force=True)
