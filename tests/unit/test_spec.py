from __future__ import annotations

import json
from dataclasses import replace

import pytest

from clawhq.controller.spec import (
    AgentSecrets,
    Placement,
    build_spec,
    container_name,
    secrets_file,
)
from clawhq.db.models import Agent
from clawhq.runtime import labels
from clawhq.settings import load_settings

PLACE = Placement("http://h:1", "i")


def make_agent() -> Agent:
    return Agent(
        id="a" * 32,
        user_id="u" * 32,
        name="helper",
        model_provider="claude",
        model="claude-sonnet-4-20250514",
        channels=["telegram"],
    )


def test_spec_carries_identity_env_limits_and_labels() -> None:
    settings = load_settings(agent_memory="1g", agent_pids_limit=128, port_range="19000-19010")
    secrets = AgentSecrets("chqllm_token", "whk_token", "gw-password", "proxy-identity")
    where = Placement("http://172.18.0.1:8000", "inst1", "172.18.0.1")
    spec = build_spec(settings, make_agent(), 19003, secrets, where)

    assert spec.name == container_name("u" * 32, "a" * 32) == f"clawhq-{'u' * 32}-{'a' * 32}"
    assert spec.labels == {
        labels.SERVICE: "openclaw-agent",
        labels.USER_ID: "u" * 32,
        labels.AGENT_ID: "a" * 32,
        labels.INSTANCE: "inst1",
        labels.SECRETS_FILE: "/home/openclaw/.clawhq-secrets.json",
    }
    assert spec.user == "1001:1001"
    assert spec.limits.memory_bytes == 1024**3
    assert spec.limits.pids_limit == 128
    assert spec.port is not None
    assert (spec.port.host_ip, spec.port.host_port, spec.port.container_port) == (
        "127.0.0.1",
        19003,
        18789,
    )
    # No secret in the env: they go by file, written into the container before each start.
    assert not spec.secret_env & set(spec.env)
    assert not [v for v in spec.env.values() for s in ("token", "password", "identity") if s in v]
    assert spec.env["CLAWHQ_SECRETS_FILE"] == "/home/openclaw/.clawhq-secrets.json"
    assert json.loads(secrets_file(make_agent(), secrets)) == {
        "CLAWHQ_API_KEY": "chqllm_token",
        "CLAWHQ_WEBHOOK_TOKEN": "whk_token",
        "OPENCLAW_GATEWAY_PASSWORD": "gw-password",
        "CLAWHQ_PROXY_IDENTITY": "proxy-identity",
        "TELEGRAM_BOT_TOKEN": "<secret>",  # the channel's, when it has none
    }
    assert spec.env["CLAWHQ_PROXY_ADDRESSES"] == "172.18.0.1"
    # The agent's pages are served on its own origin, not ClawHQ's.
    assert spec.env["CLAWHQ_PUBLIC_ORIGIN"] == f"http://{'a' * 32}.agents.localhost:8000"
    assert spec.env["CLAWHQ_BASE_PATH"] == f"/agents/{'a' * 32}"
    # The agent's model calls go to ClawHQ's LLM gateway, where agents reach ClawHQ.
    assert spec.env["CLAWHQ_LLM_BASE_URL"] == "http://172.18.0.1:8000/llm/anthropic"
    assert {"OPENCLAW_GATEWAY_PASSWORD", "CLAWHQ_PROXY_IDENTITY"} <= spec.secret_env
    assert spec.env["CLAWHQ_WEBHOOK_URL"] == f"http://172.18.0.1:8000/api/agents/{'a' * 32}/webhook"
    assert json.loads(spec.env["CLAWHQ_CHANNELS"]) == ["telegram"]
    for name in (
        "CLAWHQ_USER_ID",
        "CLAWHQ_AGENT_ID",
        "CLAWHQ_AGENT_NAME",
        "CLAWHQ_MODEL_PROVIDER",
        "CLAWHQ_MODEL",
    ):
        assert spec.env[name]


def test_config_hash_ignores_secrets_but_not_configuration() -> None:
    settings = load_settings()
    agent = make_agent()
    one = build_spec(
        settings, agent, 19000, AgentSecrets("k1", "t1", "g1"), Placement("http://h:1", "i")
    )
    two = build_spec(
        settings, agent, 19000, AgentSecrets("k2", "t2", "g2"), Placement("http://h:1", "i")
    )
    assert one.config_hash() == two.config_hash()
    agent.model = "claude-opus-4"
    three = build_spec(
        settings, agent, 19000, AgentSecrets("k1", "t1", "g1"), Placement("http://h:1", "i")
    )
    assert three.config_hash() != one.config_hash()


@pytest.mark.parametrize(
    ("model_provider", "path"),
    [
        ("claude", "anthropic"),
        ("openai", "openai"),
        ("gemini", "google"),
        ("deepseek", "deepseek"),
        ("grok", "xai"),
    ],
)
def test_host_ports_are_optional_and_the_llm_gateway_is_the_providers_base_url(
    model_provider: str, path: str
) -> None:
    settings = load_settings(
        agent_publish_ports=False,
        public_url="https://hq.example.com/",
        agent_origin="https://{agent}.agents.example.com",
    )
    agent = make_agent()
    agent.model_provider = model_provider
    spec = build_spec(
        settings, agent, 19003, AgentSecrets("k", "t", "g"), Placement("http://h:8000", "i")
    )
    assert spec.port is None
    assert spec.env["CLAWHQ_LLM_BASE_URL"] == f"http://h:8000/llm/{path}"
    assert spec.env["CLAWHQ_PUBLIC_ORIGIN"] == f"https://{agent.id}.agents.example.com"


def test_a_spec_with_a_secret_in_its_env_is_refused() -> None:
    spec = build_spec(load_settings(), make_agent(), 19000, AgentSecrets("k", "t", "g"), PLACE)
    with pytest.raises(ValueError, match="CLAWHQ_API_KEY"):
        replace(spec, env={**spec.env, "CLAWHQ_API_KEY": "chqllm_x"})
