"""The LLM gateway's policy under a real server: paths, headers and query parameters that never
reach the provider. Every refusal is in the provider's own format and nothing of it reaches the
stand-in."""

# ruff: noqa: F811  (``served`` is test_llm_gateway's fixture, imported to be used here)

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from clawhq.services import plans
from tests.unit.test_llm_gateway import (  # noqa: F401
    PROVIDER,
    Served,
    chat_body,
    key_headers,
    served,
)

PATHS = {
    "claude": "/v1/messages",
    "openai": "/v1/responses",
    "gemini": "/v1beta/models/gemini-2.5-pro:generateContent",
}


def ready(served: Served, provider: str, egress: str, plan: str = "free") -> tuple[str, str]:
    """A running agent of a new user on ``plan``, whose egress is then set to ``egress`` (the
    gateway reads the plan's policy at every call, as the egress proxy does)."""
    owner = served.user(plan)
    agent_id = served.agent(owner, provider)
    token = served.deploy(owner, agent_id)
    with served.context.sessions() as session:
        plans.set_egress(session, plan, egress)
    return agent_id, token


def post(served: Served, provider: str, token: str, body: Any, **headers: str) -> httpx.Response:
    url = f"/llm/{PROVIDER[provider]}{PATHS[provider]}"
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    sent = {**key_headers(provider, token), "content-type": "application/json", **headers}
    return served.http.post(url, content=raw, headers=sent)


@pytest.mark.parametrize(
    ("provider", "path"),
    [
        ("openai", "/v1/chat/completions"),  # the key's stored chat completions
        ("openai", "/v1/responses/resp_123"),  # a stored or background response
        ("openai", "/v1/files"),
        ("claude", "/v1/messages/batches"),
        ("gemini", "/v1beta/cachedContents"),
        ("deepseek", "/user/balance"),
        ("grok", "/v1/api-key"),
    ],
)
def test_only_listed_reads_are_relayed(served: Served, provider: str, path: str) -> None:
    owner = served.user()
    agent_id = served.agent(owner, provider)
    token = served.deploy(owner, agent_id)
    reply = served.http.get(
        f"/llm/{PROVIDER[provider]}{path}", headers=key_headers(provider, token)
    )
    assert reply.status_code == 404
    assert reply.headers["x-clawhq-error"] == "llm_path_not_relayed"
    assert "error" in reply.json()
    assert served.llm.calls == []
    listing = (
        "/v1beta/models"
        if provider == "gemini"
        else "/models"
        if provider == "deepseek"
        else "/v1/models"
    )
    url = f"/llm/{PROVIDER[provider]}{listing}"
    assert served.http.get(url, headers=key_headers(provider, token)).status_code == 200


def test_billing_and_routing_headers_and_parameters_never_reach_the_provider(
    served: Served,
) -> None:
    _, token = ready(served, "openai", "open")
    reply = post(
        served,
        "openai",
        token,
        chat_body("openai", "/v1/responses", False),
        **{
            "OpenAI-Organization": "org-elsewhere",
            "OpenAI-Project": "proj_elsewhere",
            "OpenAI-Beta": "assistants=v2",
            "x-goog-user-project": "another-project",
            "Helicone-Auth": "Bearer sk-helicone",
            "X-Stainless-Lang": "python",
        },
    )
    assert reply.status_code == 200
    sent = served.llm.calls[-1].headers
    for name in ("openai-organization", "openai-project", "openai-beta", "x-goog-user-project"):
        assert name not in sent
    assert "helicone-auth" not in sent and sent["x-stainless-lang"] == "python"
    assert sent["authorization"] == f"Bearer {served.llm.calls[-1].key}"


def test_anthropic_betas_are_filtered_by_egress(served: Served) -> None:
    _, token = ready(served, "claude", "allowlist")
    betas = "interleaved-thinking-2025-05-14,mcp-client-2025-11-20,code-execution-2025-08-25"
    body = chat_body("claude", "/v1/messages", False)
    assert post(served, "claude", token, body, **{"anthropic-beta": betas}).status_code == 200
    assert served.llm.calls[-1].headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    with served.context.sessions() as session:
        plans.set_egress(session, "free", "open")
    assert post(served, "claude", token, body, **{"anthropic-beta": betas}).status_code == 200
    assert served.llm.calls[-1].headers["anthropic-beta"] == (
        "interleaved-thinking-2025-05-14,mcp-client-2025-11-20"
    )
    _, gemini = ready(served, "gemini", "open", plan="pro")
    url = "/llm/google/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse&fields=x&key=k"
    reply = served.http.post(
        url, json=chat_body("gemini", url, True), headers=key_headers("gemini", gemini)
    )
    assert reply.status_code == 200
    assert served.llm.calls[-1].query == {"alt": "sse"}
