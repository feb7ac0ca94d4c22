"""The LLM gateway's policy under a real server: provider-side tools by the plan's egress,
answers left for later, paths and headers that never reach the provider, answers without usage
charged their worst case, and the tool uses providers report. Every refusal is in the
provider's own format and nothing of it reaches the stand-in."""

# ruff: noqa: F811  (``served`` is test_llm_gateway's fixture, imported to be used here)

from __future__ import annotations

import json
import math
import time
from typing import Any

import httpx
import pytest

from clawhq.services import plans
from tests.standins.llm import compact
from tests.unit.test_llm_gateway import (  # noqa: F401
    MODEL,
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
#: A provider-side tool that fetches the web, per provider (allowed to `open` agents only).
FETCHING = {
    "claude": {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
    "openai": {"type": "web_search"},
    "gemini": {"urlContext": {}},
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


def with_tool(provider: str, tool: dict[str, Any]) -> dict[str, Any]:
    body = chat_body(provider, PATHS[provider], False)
    return {**body, "tools": [tool]}


def assert_refused(reply: httpx.Response, provider: str, status: int, code: str) -> None:
    assert reply.status_code == status, reply.text
    assert reply.headers["x-clawhq-error"] == code
    error = reply.json()
    if provider == "claude":
        assert error["type"] == "error" and error["error"]["type"] == "permission_error"
    elif provider == "gemini":
        assert error["error"]["status"] == "PERMISSION_DENIED"
        assert error["error"]["code"] == status
    else:
        assert error["error"]["code"] == "permission_denied"


def no_ledger_row(served: Served, agent_id: str) -> None:
    time.sleep(0.3)  # past the ledger writer's linger: a row would be there by now
    assert served.calls(agent_id) == []


@pytest.mark.parametrize("provider", ["claude", "openai", "gemini"])
def test_a_provider_side_tool_that_fetches_is_refused_unless_the_egress_is_open(
    served: Served, provider: str
) -> None:
    tool = FETCHING[provider]
    agent_id, token = ready(served, provider, "none")
    reply = post(served, provider, token, with_tool(provider, tool))
    assert_refused(reply, provider, 403, "llm_provider_tool_refused")
    name = tool.get("type") or next(iter(tool))
    assert repr(name) in reply.text and "egress" in reply.text
    assert served.llm.calls == []  # nothing reached the provider
    no_ledger_row(served, agent_id)
    with served.context.sessions() as session:
        plans.set_egress(session, "free", "open")
    passed = post(served, provider, token, with_tool(provider, tool))
    assert passed.status_code == 200, passed.text
    assert served.llm.calls[-1].body["tools"] == [tool]


def test_an_image_the_provider_would_fetch_by_url_is_refused_unless_the_egress_is_open(
    served: Served,
) -> None:
    agent_id, token = ready(served, "claude", "allowlist")
    source = {"type": "url", "url": "https://collector.example/pixel.png?d=secret"}
    content = [{"type": "image", "source": source}, {"type": "text", "text": "what is it?"}]
    body = {**chat_body("claude", "/v1/messages", False)}
    body["messages"] = [{"role": "user", "content": content}]
    assert_refused(post(served, "claude", token, body), "claude", 403, "llm_url_source_refused")
    assert served.llm.calls == []
    no_ledger_row(served, agent_id)
    content[0]["source"] = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}
    assert post(served, "claude", token, body).status_code == 200


def test_a_tool_whose_cost_the_answer_does_not_report_is_refused_even_to_open_agents(
    served: Served,
) -> None:
    _, token = ready(served, "openai", "open")
    for tool in (
        {"type": "code_interpreter", "container": {"type": "auto"}},
        {"type": "file_search", "vector_store_ids": ["vs_operator"]},
        {"type": "image_generation"},
        {"type": "brand_new_hosted_thing"},
    ):
        reply = post(served, "openai", token, with_tool("openai", tool))
        assert_refused(reply, "openai", 403, "llm_provider_tool_refused")
    own = {"type": "function", "name": "lookup", "parameters": {"type": "object"}}
    assert post(served, "openai", token, with_tool("openai", own)).status_code == 200
    assert len(served.llm.calls) == 1


def test_background_responses_are_refused(served: Served) -> None:
    agent_id, token = ready(served, "openai", "open")
    body = {**chat_body("openai", "/v1/responses", False), "background": True}
    assert_refused(post(served, "openai", token, body), "openai", 403, "llm_background_refused")
    assert served.llm.calls == []
    no_ledger_row(served, agent_id)


def test_a_body_read_one_way_by_clawhq_and_another_by_the_provider_is_refused(
    served: Served,
) -> None:
    _, token = ready(served, "openai", "none")
    twice = b'{"model":"gpt-5","input":"hi","tools":[{"type":"function","type":"web_search"}]}'
    reply = post(served, "openai", token, twice)
    assert reply.status_code == 400 and reply.headers["x-clawhq-error"] == "llm_body_unreadable"
    assert reply.json()["error"]["type"] == "invalid_request_error"
    assert served.llm.calls == []


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


# -- what an answer without usage costs --------------------------------------------------------


def test_a_served_answer_without_usage_is_charged_its_worst_case(served: Served) -> None:
    agent_id, token = ready(served, "claude", "open")
    body = {**chat_body("claude", "/v1/messages", False), "max_tokens": 321}
    raw = json.dumps(body).encode()
    no_usage = {"id": "msg_1", "type": "message", "role": "assistant", "model": MODEL["claude"]}
    served.llm.fail_next(200, json.dumps({**no_usage, "content": []}).encode())
    assert post(served, "claude", token, raw).status_code == 200
    [row] = served.wait_calls(agent_id, 1)
    worst = math.ceil(len(raw) / 4) + 321
    assert (row.input_tokens, row.output_tokens, row.total_tokens) == (
        math.ceil(len(raw) / 4),
        321,
        worst,
    )
    assert row.outcome == "ok" and served.total_tokens(agent_id) == worst
    # A stream that ends without its usage event, and a request that sets no output cap.
    stream = b'event: message_start\ndata: {"type":"message_start","message":{"id":"m"}}\n\n'
    served.llm.fail_next(200, stream, "text/event-stream")
    streamed = {**chat_body("claude", "/v1/messages", True)}
    del streamed["max_tokens"]
    raw = json.dumps(streamed).encode()
    assert post(served, "claude", token, raw).status_code == 200
    rows = served.wait_calls(agent_id, 2)
    assert rows[1].total_tokens == math.ceil(len(raw) / 4) + 65_536  # CLAWHQ_LLM_UNMETERED_CHARGE
    # The provider's own error costs nothing.
    served.llm.fail_next(400, b'{"type":"error","error":{"type":"invalid_request_error"}}')
    assert post(served, "claude", token, raw).status_code == 400
    assert served.wait_calls(agent_id, 3)[2].total_tokens == 0
    registry = served.context.metrics.registry
    labels = {"provider": "anthropic", "plan": "free"}
    assert registry.get_sample_value("clawhq_llm_unmetered_calls_total", labels) == 2


def test_provider_side_tool_uses_the_answer_reports_are_counted(served: Served) -> None:
    _, token = ready(served, "claude", "open")
    usage = {"input_tokens": 5, "output_tokens": 7, "server_tool_use": {"web_search_requests": 2}}
    answer = {"id": "m", "type": "message", "model": "c", "content": [], "usage": usage}
    served.llm.fail_next(200, compact(answer).encode())
    body = with_tool("claude", FETCHING["claude"])
    assert post(served, "claude", token, body).status_code == 200
    openai_id, openai = ready(served, "openai", "open", plan="pro")
    output = [{"type": "web_search_call", "id": "ws_1"}, {"type": "message", "content": []}]
    done = {"usage": {"input_tokens": 1, "output_tokens": 1, "total_tokens": 2}, "output": output}
    served.llm.fail_next(200, compact({"object": "response", **done}).encode())
    assert (
        post(served, "openai", openai, with_tool("openai", FETCHING["openai"])).status_code == 200
    )
    served.wait_calls(openai_id, 1)
    registry = served.context.metrics.registry

    def uses(provider: str, plan: str) -> float | None:
        labels = {"provider": provider, "plan": plan, "tool": "web_search"}
        return registry.get_sample_value("clawhq_llm_tool_uses_total", labels)

    assert (uses("anthropic", "free"), uses("openai", "pro")) == (2, 1)
