"""The LLM gateway's body policy, pure: which provider-side tools, fields and content fetched by
URL a model call may carry (by the agent's egress), what an answer without usage is charged,
and the provider-side tool uses an answer reports."""

from __future__ import annotations

import json
from typing import Any

import pytest

from clawhq.errors import LlmRefused
from clawhq.llm import policy
from clawhq.llm.metering import Usage, Wire, meter_for

A, CHAT, RESP, GEM = Wire.ANTHROPIC, Wire.OPENAI_CHAT, Wire.OPENAI_RESPONSES, Wire.GEMINI


def check(provider: str, wire: Wire, body: Any, *, egress_open: bool = False) -> Usage:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return policy.check(provider, wire, raw, egress_open=egress_open, default_output=1000)


def refused(provider: str, wire: Wire, body: Any, *, egress_open: bool = False) -> LlmRefused:
    with pytest.raises(LlmRefused) as caught:
        check(provider, wire, body, egress_open=egress_open)
    return caught.value


def tools(*entries: Any, **rest: Any) -> dict[str, Any]:
    return {"model": "m", "max_tokens": 10, "messages": [], "tools": list(entries), **rest}


#: (provider, wire, tool, allowed to an `open` agent, allowed to the others)
TOOLS = [
    ("anthropic", A, {"name": "f", "input_schema": {"type": "object"}}, True, True),
    ("anthropic", A, {"type": "custom", "name": "f", "input_schema": {}}, True, True),
    ("anthropic", A, {"type": "bash_20250124", "name": "bash"}, True, True),
    ("anthropic", A, {"type": "text_editor_20250728", "name": "str_replace"}, True, True),
    ("anthropic", A, {"type": "computer_20250124", "name": "computer"}, True, True),
    ("anthropic", A, {"type": "memory_20250818", "name": "memory"}, True, True),
    ("anthropic", A, {"type": "tool_search_tool_regex_20251119", "name": "s"}, True, True),
    ("anthropic", A, {"type": "web_search_20250305", "name": "web_search"}, True, False),
    ("anthropic", A, {"type": "web_search_20260209", "name": "web_search"}, True, False),
    ("anthropic", A, {"type": "web_fetch_20250910", "name": "web_fetch"}, True, False),
    ("anthropic", A, {"type": "mcp_toolset", "mcp_server_name": "x"}, True, False),
    ("anthropic", A, {"type": "code_execution_20250825", "name": "c"}, False, False),
    ("anthropic", A, {"type": "advisor_20260301", "name": "a"}, False, False),
    ("anthropic", A, {"type": "browser_toolset_20260801"}, False, False),  # unknown
    ("anthropic", A, {"type": "web_search"}, True, False),
    ("anthropic", A, {"type": "magic_20990101"}, False, False),
    ("deepseek", A, {"type": "web_search_20250305", "name": "web_search"}, False, False),
    ("openai", RESP, {"type": "function", "name": "f", "parameters": {}}, True, True),
    ("openai", RESP, {"type": "custom", "name": "f"}, True, True),
    ("openai", RESP, {"type": "computer_use_preview", "environment": "browser"}, True, True),
    ("openai", RESP, {"type": "local_shell"}, True, True),
    ("openai", RESP, {"type": "apply_patch"}, True, True),
    ("openai", RESP, {"type": "shell", "environment": {"type": "local"}}, True, True),
    ("openai", RESP, {"type": "shell", "environment": {"type": "container_auto"}}, False, False),
    ("openai", RESP, {"type": "tool_search", "execution": "server"}, True, True),
    ("openai", RESP, {"type": "web_search"}, True, False),
    ("openai", RESP, {"type": "web_search_preview"}, True, False),
    ("openai", RESP, {"type": "web_search_preview_2025_03_11"}, True, False),
    (
        "openai",
        RESP,
        {"type": "mcp", "server_url": "https://x.example", "server_label": "x"},
        True,
        False,
    ),
    ("openai", RESP, {"type": "code_interpreter", "container": {"type": "auto"}}, False, False),
    ("openai", RESP, {"type": "file_search", "vector_store_ids": ["vs_1"]}, False, False),
    ("openai", RESP, {"type": "image_generation"}, False, False),
    ("openai", RESP, {"type": "programmatic_tool_calling"}, False, False),
    ("openai", RESP, {"type": "browser"}, False, False),  # unknown
    ("openai", RESP, {"name": "untyped"}, False, False),
    ("openai", RESP, "web_search", False, False),
    (
        "openai",
        RESP,
        {"type": "namespace", "name": "n", "tools": [{"type": "function", "name": "f"}]},
        True,
        True,
    ),
    (
        "openai",
        RESP,
        {"type": "namespace", "name": "n", "tools": [{"type": "web_search"}]},
        False,
        False,
    ),
    ("xai", RESP, {"type": "function", "name": "f"}, True, True),
    ("xai", RESP, {"type": "web_search"}, False, False),
    ("xai", RESP, {"type": "x_search"}, False, False),
    ("openai", CHAT, {"type": "function", "function": {"name": "f"}}, True, True),
    ("openai", CHAT, {"type": "web_search"}, False, False),
    ("deepseek", CHAT, {"type": "function", "function": {"name": "f"}}, True, True),
    ("google", CHAT, {"type": "function", "function": {"name": "f"}}, True, True),
    ("google", CHAT, {"google_search": {}}, False, False),
    ("google", GEM, {"functionDeclarations": [{"name": "f"}]}, True, True),
    ("google", GEM, {"function_declarations": [{"name": "f"}]}, True, True),
    ("google", GEM, {"computerUse": {"environment": "ENVIRONMENT_BROWSER"}}, True, True),
    ("google", GEM, {"urlContext": {}}, True, False),
    ("google", GEM, {"url_context": {}}, True, False),
    ("google", GEM, {"codeExecution": {}}, True, False),
    ("google", GEM, {"code_execution": {}}, True, False),
    ("google", GEM, {"googleSearch": {}}, False, False),
    ("google", GEM, {"google_search": {}}, False, False),
    ("google", GEM, {"googleSearchRetrieval": {}}, False, False),
    ("google", GEM, {"google_search_retrieval": {}}, False, False),
    ("google", GEM, {"googleMaps": {}}, False, False),
    ("google", GEM, {"fileSearch": {"fileSearchStoreNames": ["s"]}}, False, False),
    ("google", GEM, {"GoogleSearch": {}}, False, False),  # unknown spelling
    ("google", GEM, {"enterpriseWebSearch": {}}, False, False),
    ("google", GEM, {"functionDeclarations": [], "googleSearch": {}}, False, False),
    ("google", GEM, {"googleSearch": None}, True, True),  # null: no tool
]


@pytest.mark.parametrize(("provider", "wire", "tool", "for_open", "for_others"), TOOLS)
def test_each_providers_tools_by_class_and_egress(
    provider: str, wire: Wire, tool: Any, for_open: bool, for_others: bool
) -> None:
    body = tools(tool)
    for egress_open, allowed in ((True, for_open), (False, for_others)):
        if allowed:
            check(provider, wire, body, egress_open=egress_open)
            continue
        error = refused(provider, wire, body, egress_open=egress_open)
        assert (error.status, error.kind, error.code) == (
            403,
            "permission",
            "llm_provider_tool_refused",
        )
        if isinstance(tool, dict) and tool.get("type") not in (None, "namespace"):
            assert repr(tool["type"]) in error.message  # it names the tool
        elif wire is GEM and len(tool) == 1:
            assert repr(next(iter(tool))) in error.message


@pytest.mark.parametrize(
    ("provider", "wire", "field", "value", "for_open"),
    [
        ("anthropic", A, "mcp_servers", [{"type": "url", "url": "https://x.example/mcp"}], True),
        ("anthropic", A, "container", {"skills": [{"skill_id": "pptx"}]}, False),
        ("openai", RESP, "prompt", {"id": "pmpt_1"}, False),
        ("openai", CHAT, "web_search_options", {}, False),  # {}: still asks for search
        ("xai", CHAT, "search_parameters", {"mode": "on"}, False),
        ("xai", RESP, "search_parameters", {"mode": "on"}, False),
        ("google", GEM, "cachedContent", "cachedContents/abc", False),
        ("google", GEM, "cached_content", "cachedContents/abc", False),
        ("google", CHAT, "extra_body", {"google": {"cached_content": "cachedContents/a"}}, False),
    ],
)
def test_fields_that_ask_the_provider_for_tools_or_stored_state(
    provider: str, wire: Wire, field: str, value: Any, for_open: bool
) -> None:
    if value == {}:
        value = {"search_context_size": "low"}
    body = {"model": "m", "messages": [], field: value}
    if for_open:
        check(provider, wire, body, egress_open=True)
    else:
        assert refused(provider, wire, body, egress_open=True).code == "llm_provider_tool_refused"
    assert refused(provider, wire, body).code == "llm_provider_tool_refused"
    check(provider, wire, {"model": "m", "messages": [], field: None})


@pytest.mark.parametrize(
    "model", ["gpt-4o-search-preview", "gpt-4o-mini-search-preview", "gpt-5-search-api"]
)
def test_openai_models_that_always_search_are_refused(model: str) -> None:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    assert refused("openai", CHAT, body, egress_open=True).code == "llm_provider_tool_refused"
    check("openai", CHAT, {**body, "model": "gpt-5-research-notes-1"})
    check("deepseek", CHAT, body)  # another provider's name, whatever it means there


@pytest.mark.parametrize(
    ("provider", "wire", "field"),
    [("openai", RESP, "background"), ("xai", RESP, "background"), ("xai", CHAT, "deferred")],
)
def test_answers_left_for_later_are_refused_to_every_agent(
    provider: str, wire: Wire, field: str
) -> None:
    body = {"model": "m", "input": "hi", field: True}
    error = refused(provider, wire, body, egress_open=True)
    assert (error.status, error.code) == (403, "llm_background_refused")
    assert refused(provider, wire, {**body, field: "yes"}).code == "llm_background_refused"
    check(provider, wire, {**body, field: False})


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'"a string"',
        b'{"model":"m","tools":[{"type":"function","type":"web_search"}]}',
        b'{"tools":[{"type":"web_search"}],"model":"m","tools":[]}',
        b'{"model":"m","input":"\xff\xfe"}',  # not UTF-8: another parser might read it
    ],
)
def test_a_body_that_cannot_be_read_one_way_only_is_refused(body: bytes) -> None:
    error = refused("openai", RESP, body, egress_open=True)
    assert (error.status, error.kind, error.code) == (400, "invalid", "llm_body_unreadable")


def test_tools_that_are_not_a_list_are_refused() -> None:
    body = {"model": "m", "tools": {"type": "web_search"}}
    assert refused("openai", RESP, body, egress_open=True).code == "llm_provider_tool_refused"


URL = "https://collector.example/?q=secret"
FETCHED = [
    (
        A,
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image", "source": {"type": "url", "url": URL}}],
                }
            ]
        },
    ),
    (
        A,
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "document", "source": {"type": "url", "url": URL}}],
                }
            ]
        },
    ),
    (
        A,
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t",
                            "content": [{"type": "image", "source": {"type": "url", "url": URL}}],
                        }
                    ],
                }
            ]
        },
    ),
    (
        CHAT,
        {
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": URL}}]}
            ]
        },
    ),
    (CHAT, {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": URL}]}]}),
    (RESP, {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": URL}]}]}),
    (RESP, {"input": [{"role": "user", "content": [{"type": "input_file", "file_url": URL}]}]}),
    (
        RESP,
        {
            "input": [
                {
                    "type": "function_call_output",
                    "call_id": "c",
                    "output": [{"type": "input_image", "image_url": URL}],
                }
            ]
        },
    ),
    (GEM, {"contents": [{"parts": [{"fileData": {"mimeType": "image/png", "fileUri": URL}}]}]}),
    (GEM, {"contents": [{"parts": [{"file_data": {"file_uri": URL.upper()}}]}]}),
    (GEM, {"contents": [], "systemInstruction": {"parts": [{"fileData": {"fileUri": URL}}]}}),
]
INLINE = [
    (
        A,
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image", "source": {"type": "base64", "data": "AA=="}}],
                }
            ]
        },
    ),
    (
        A,
        {
            "messages": [
                {
                    "role": "assistant",
                    "content": [{"type": "text", "text": URL, "citations": [{"url": URL}]}],
                }
            ]
        },
    ),
    (
        CHAT,
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}
                    ],
                }
            ]
        },
    ),
    (CHAT, {"messages": [{"role": "user", "content": URL}]}),
    (RESP, {"input": URL}),
    (
        RESP,
        {
            "input": [
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [
                        {
                            "type": "output_text",
                            "text": "x",
                            "annotations": [{"type": "url_citation", "url": URL}],
                        }
                    ],
                }
            ]
        },
    ),
    (GEM, {"contents": [{"parts": [{"fileData": {"fileUri": "files/abc"}}]}]}),
    (GEM, {"contents": [{"parts": [{"inlineData": {"mimeType": "image/png", "data": "AA=="}}]}]}),
]


@pytest.mark.parametrize(("wire", "body"), FETCHED)
def test_content_the_provider_would_fetch_by_url_is_for_open_agents_only(
    wire: Wire, body: dict[str, Any]
) -> None:
    provider = {A: "anthropic", CHAT: "openai", RESP: "openai", GEM: "google"}[wire]
    body = {"model": "m", **body}
    error = refused(provider, wire, body)
    assert (error.status, error.code) == (403, "llm_url_source_refused")
    assert "by URL" in error.message
    check(provider, wire, body, egress_open=True)


@pytest.mark.parametrize(("wire", "body"), INLINE)
def test_inline_content_and_replayed_citations_pass(wire: Wire, body: dict[str, Any]) -> None:
    provider = {A: "anthropic", CHAT: "openai", RESP: "openai", GEM: "google"}[wire]
    check(provider, wire, {"model": "m", **body})


# -- what an answer without usage costs --------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "output"),
    [
        ({"model": "m", "max_tokens": 300, "messages": []}, 300),
        ({"model": "m", "max_completion_tokens": 200, "max_tokens": 9, "n": 3}, 600),
        ({"model": "m", "max_completion_tokens": 9, "max_tokens": 200, "n": 3}, 600),
        ({"model": "m", "max_output_tokens": 50}, 50),
        ({"contents": [], "generationConfig": {"maxOutputTokens": 70, "candidateCount": 2}}, 140),
        ({"contents": [], "generation_config": {"max_output_tokens": 80}}, 80),
        ({"model": "m"}, 65_536),  # none asked: the default
        ({"model": "m", "max_tokens": True}, 65_536),
        ({"model": "m", "max_tokens": 10**15, "n": 10**6}, (1 << 20) * 128),
    ],
)
def test_the_worst_case_is_the_body_over_four_plus_the_output_asked_for(
    body: dict[str, Any], output: int
) -> None:
    raw = json.dumps(body).encode()
    expected = -(-len(raw) // 4) + output
    assert policy.worst_case_tokens("openai", raw) == expected
    assert policy.worst_case_tokens("openai", b"[not json") == 3 + 65_536


def test_an_answer_without_usage_is_charged_the_worst_case_never_nothing() -> None:
    worst = Usage(input_tokens=100, output_tokens=500)
    assert policy.charged(Usage(model="m"), 200, worst).total_tokens == 600
    assert policy.charged(Usage(model="m"), 200, worst).model == "m"
    seen = Usage(input_tokens=3, output_tokens=4, seen=True)
    assert policy.charged(seen, 200, worst) is seen
    assert policy.charged(Usage(), 400, worst).total_tokens == 0  # the provider said no
    assert policy.charged(Usage(), 529, worst).total_tokens == 0
    body = json.dumps({"model": "m", "max_tokens": 500}).encode()
    checked = policy.check("anthropic", A, body, egress_open=False, default_output=1)
    assert checked.total_tokens == -(-len(body) // 4) + 500


# -- provider-side tool uses in the answer -----------------------------------------------------


def test_anthropic_server_tool_uses_are_read_from_the_usage() -> None:
    usage = {
        "input_tokens": 10,
        "output_tokens": 5,
        "server_tool_use": {"web_search_requests": 3, "web_fetch_requests": 1, "x": "y"},
    }
    whole = {"type": "message", "model": "m", "content": [], "usage": usage}
    meter = meter_for(A, "application/json")
    meter.feed(json.dumps(whole).encode())
    meter.close()
    assert meter.usage.tool_uses == {"web_search": 3, "web_fetch": 1}
    start = {"type": "message_start", "message": {**whole, "usage": {"input_tokens": 10}}}
    delta = {"type": "message_delta", "delta": {}, "usage": usage}
    stream = "".join(
        f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in (start, delta)
    ).encode()
    meter = meter_for(A, "text/event-stream")
    meter.feed(stream)
    meter.close()
    assert meter.usage.tool_uses == {"web_search": 3, "web_fetch": 1}
    assert meter.usage.total_tokens == 15


def test_openai_web_search_calls_are_counted_from_the_output() -> None:
    output = [
        {"type": "web_search_call", "id": "ws_1", "status": "completed"},
        {"type": "web_search_call", "id": "ws_2", "status": "completed"},
        {"type": "message", "content": []},
    ]
    usage = {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3}
    response = {"object": "response", "model": "m", "output": output, "usage": usage}
    meter = meter_for(RESP, "application/json")
    meter.feed(json.dumps(response).encode())
    meter.close()
    assert meter.usage.tool_uses == {"web_search": 2}
    completed = {"type": "response.completed", "response": response}
    meter = meter_for(RESP, "text/event-stream")
    meter.feed(f"event: response.completed\ndata: {json.dumps(completed)}\n\n".encode())
    meter.close()
    assert meter.usage.tool_uses == {"web_search": 2} and meter.usage.total_tokens == 3
