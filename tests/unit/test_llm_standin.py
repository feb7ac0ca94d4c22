"""The LLM stand-in speaks each provider's wire format, with the usage numbers tests rely on."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.standins.llm import (
    ANTHROPIC_USAGE,
    DEEPSEEK_USAGE,
    GEMINI_USAGE,
    MODEL_LISTS,
    NORMALISED,
    OPENAI_CHAT_USAGE,
    OPENAI_RESPONSES_USAGE,
    ROUTES,
    TOTALS,
    USAGE,
    XAI_RESPONSES_USAGE,
    XAI_USAGE,
    LLMStandIn,
    parse_sse,
)

GEMINI = "/v1beta/models/gemini-2.5-flash"
CHATS = [
    ("openai", "/v1/chat/completions", OPENAI_CHAT_USAGE),
    ("deepseek", "/chat/completions", DEEPSEEK_USAGE),
    ("deepseek", "/v1/chat/completions", DEEPSEEK_USAGE),
    ("xai", "/v1/chat/completions", XAI_USAGE),
]
RESPONSES = [
    ("openai", "/v1/responses", OPENAI_RESPONSES_USAGE),
    ("xai", "/v1/responses", XAI_RESPONSES_USAGE),
]


@pytest.fixture
def llm() -> Iterator[LLMStandIn]:
    with LLMStandIn() as standin:
        yield standin


def post(llm: LLMStandIn, provider: str, path: str, body: Any, **kw: Any) -> httpx.Response:
    kw.setdefault("headers", {"authorization": "Bearer sk-test"})
    return httpx.post(llm.upstream(provider) + path, json=body, timeout=5, **kw)


def test_anthropic_message(llm: LLMStandIn) -> None:
    body = {"model": "claude-x", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}
    r = post(llm, "anthropic", "/v1/messages", body, headers={"x-api-key": "sk-ant"})
    assert r.status_code == 200
    message = r.json()
    assert message["type"] == "message"
    assert message["role"] == "assistant"
    assert message["model"] == "claude-x"
    assert message["stop_reason"] == "end_turn"
    assert message["content"] == [{"type": "text", "text": "Hello from the"}]
    assert message["usage"] == ANTHROPIC_USAGE
    [call] = llm.calls
    assert (call.provider, call.path, call.key, call.key_from) == (
        "anthropic",
        "/v1/messages",
        "sk-ant",
        "x-api-key",
    )
    assert call.body == body
    assert not call.streamed
    assert call.completed
    assert call.answer == llm.last_body == r.content


def test_anthropic_stream(llm: LLMStandIn) -> None:
    body = {"model": "claude-x", "max_tokens": 64, "messages": [], "stream": True}
    r = post(llm, "anthropic", "/v1/messages", body, headers={"x-api-key": "sk-ant"})
    assert r.headers["content-type"] == "text/event-stream"
    assert r.headers["transfer-encoding"] == "chunked"
    events = parse_sse(r.content)
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * 3,
        "content_block_stop",
        "message_delta",
        "message_delta",
        "message_stop",
    ]
    assert all(data["type"] == name for name, data in events)
    start = events[0][1]["message"]["usage"]
    assert start == {**ANTHROPIC_USAGE, "output_tokens": 1}
    deltas = [data["usage"] for name, data in events if name == "message_delta"]
    assert [d["output_tokens"] for d in deltas] == [20, 42]
    assert deltas[-1] == ANTHROPIC_USAGE
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert text == "Hello from the"
    assert r.content.startswith(b"event: message_start\ndata: {")
    assert llm.calls[0].streamed
    assert llm.calls[0].completed
    assert llm.last_body == r.content


@pytest.mark.parametrize(("provider", "path", "usage"), CHATS)
def test_chat_completion(llm: LLMStandIn, provider: str, path: str, usage: Any) -> None:
    r = post(llm, provider, path, {"model": "m1", "messages": []})
    completion = r.json()
    assert completion["object"] == "chat.completion"
    assert completion["choices"][0]["message"]["content"] == "Hello from the"
    assert completion["choices"][0]["finish_reason"] == "stop"
    assert completion["usage"] == usage
    assert (llm.calls[0].key, llm.calls[0].key_from) == ("sk-test", "authorization")


@pytest.mark.parametrize(("provider", "path", "usage"), CHATS)
def test_chat_stream_usage_only_when_asked(
    llm: LLMStandIn, provider: str, path: str, usage: Any
) -> None:
    plain = post(llm, provider, path, {"model": "m1", "messages": [], "stream": True})
    assert plain.content.endswith(b"}\n\ndata: [DONE]\n\n")
    events = parse_sse(plain.content)
    assert events[-1] == (None, "[DONE]")
    chunks = [data for _, data in events[:-1]]
    assert len(chunks) == 5  # role, three deltas, finish
    assert all("usage" not in c and c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"

    asked = {"model": "m1", "messages": [], "stream": True}
    asked["stream_options"] = {"include_usage": True}
    r = post(llm, provider, path, asked)
    *lines, last, done = r.content.split(b"\n\n")[:-1]
    assert done == b"data: [DONE]"
    assert all(b'"usage":null' in line for line in lines)
    final = json.loads(last.removeprefix(b"data: "))
    assert final["choices"] == []
    assert final["usage"] == usage
    deltas = [json.loads(line[6:])["choices"][0]["delta"].get("content") for line in lines]
    assert "".join(d for d in deltas if d) == "Hello from the"


@pytest.mark.parametrize(("provider", "path", "usage"), RESPONSES)
def test_responses(llm: LLMStandIn, provider: str, path: str, usage: Any) -> None:
    response = post(llm, provider, path, {"model": "m2", "input": "hi"}).json()
    assert response["object"] == "response"
    assert response["status"] == "completed"
    assert response["output"][0]["content"][0]["text"] == "Hello from the"
    assert response["usage"] == usage

    llm.stream_chunks = 4
    r = post(llm, provider, path, {"model": "m2", "input": "hi", "stream": True})
    events = parse_sse(r.content)
    assert events[0][0] == "response.created"
    assert events[0][1]["response"]["usage"] is None
    assert events[-1][0] == "response.completed"
    assert all(data["type"] == name for name, data in events)
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    deltas = [data["delta"] for name, data in events if name == "response.output_text.delta"]
    assert deltas == ["Hello", " from", " the", " stand"]
    assert events[-1][1]["response"]["usage"] == usage


def test_gemini_generate_content(llm: LLMStandIn) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    r = post(llm, "google", f"{GEMINI}:generateContent", body, headers={"x-goog-api-key": "AIza"})
    answer = r.json()
    assert answer["usageMetadata"] == GEMINI_USAGE
    assert answer["modelVersion"] == "gemini-2.5-flash"
    candidate = answer["candidates"][0]
    assert candidate["content"] == {"parts": [{"text": "Hello from the"}], "role": "model"}
    assert candidate["finishReason"] == "STOP"
    call = llm.calls[0]
    assert (call.key, call.key_from, call.streamed) == ("AIza", "x-goog-api-key", False)
    assert call.path == f"{GEMINI}:generateContent"


def test_gemini_sse(llm: LLMStandIn) -> None:
    path = f"{GEMINI}:streamGenerateContent"
    r = post(llm, "google", path, {"contents": []}, headers={}, params={"alt": "sse", "key": "AIq"})
    assert r.headers["content-type"] == "text/event-stream"
    assert r.content.count(b"\r\n\r\n") == 3
    assert r.content.endswith(b"}\r\n\r\n")
    chunks = [data for name, data in parse_sse(r.content) if name is None]
    assert len(chunks) == 3
    usages = [c["usageMetadata"] for c in chunks]
    counts = [u["candidatesTokenCount"] for u in usages]
    assert counts == sorted(counts)
    assert usages[-1] == GEMINI_USAGE
    assert all(u["totalTokenCount"] <= GEMINI_USAGE["totalTokenCount"] for u in usages)
    assert all(c["modelVersion"] == "gemini-2.5-flash" and c["candidates"] for c in chunks)
    assert "finishReason" not in chunks[0]["candidates"][0]
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    call = llm.calls[0]
    assert (call.key, call.key_from, call.streamed) == ("AIq", "query", True)
    assert call.query == {"alt": "sse", "key": "AIq"}


def test_gemini_stream_without_sse_is_a_json_array(llm: LLMStandIn) -> None:
    path = f"{GEMINI}:streamGenerateContent"
    with httpx.stream(
        "POST", llm.upstream("google") + path, json={}, headers={"x-goog-api-key": "k"}
    ) as r:
        assert r.headers["content-type"] == "application/json"
        pieces = list(r.iter_raw())
    raw = b"".join(pieces)
    assert raw.startswith(b"[{\n")
    assert raw.count(b"\n,\r\n") == 2
    assert raw.endswith(b"}]")
    chunks = json.loads(raw)
    assert [c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks] == [
        "Hello",
        " from",
        " the",
    ]
    assert chunks[-1]["usageMetadata"] == GEMINI_USAGE


def test_streams_are_incremental(llm: LLMStandIn) -> None:
    llm.stream_delay = 0.05
    body = {"model": "m", "messages": [], "stream": True}
    started = time.monotonic()
    with httpx.stream(
        "POST",
        llm.upstream("openai") + "/v1/chat/completions",
        json=body,
        headers={"x-api-key": "k"},
    ) as r:
        arrivals = [(time.monotonic() - started, piece) for piece in r.iter_raw()]
    first = next(t for t, piece in arrivals if b'"content":"Hello"' in piece)
    assert arrivals[-1][0] - first >= 0.09  # two pauses between three deltas
    assert llm.finished(1)


@pytest.mark.parametrize(("provider", "path"), sorted(MODEL_LISTS))
def test_model_lists_need_a_key(llm: LLMStandIn, provider: str, path: str) -> None:
    url = llm.upstream(provider) + path
    assert httpx.get(url, headers={"x-api-key": "k"}).json() == MODEL_LISTS[(provider, path)]
    assert httpx.get(url).status_code == 401


@pytest.mark.parametrize(
    ("provider", "path", "check"),
    [
        ("anthropic", "/v1/messages", lambda e: e["error"]["type"] == "authentication_error"),
        ("openai", "/v1/responses", lambda e: e["error"]["code"] == "invalid_api_key"),
        ("deepseek", "/chat/completions", lambda e: e["error"]["code"] == "invalid_api_key"),
        (
            "google",
            f"{GEMINI}:generateContent",
            lambda e: e["error"]["status"] == "UNAUTHENTICATED",
        ),
    ],
)
def test_no_key_is_401_in_the_providers_format(
    llm: LLMStandIn, provider: str, path: str, check: Any
) -> None:
    r = post(llm, provider, path, {"model": "m"}, headers={"authorization": "Basic eDp5"})
    assert r.status_code == 401
    assert check(r.json())
    assert llm.calls[0].key is None


def test_unknown_paths_are_404_json(llm: LLMStandIn) -> None:
    for url in (f"{llm.url}/openai/v1/nothing", f"{llm.url}/nobody/v1/messages", f"{llm.url}/"):
        r = httpx.post(url, json={}, headers={"x-api-key": "k"})
        assert r.status_code == 404
        assert "error" in r.json()
    assert httpx.get(llm.upstream("openai") + "/v1/chat/completions").status_code == 404
    assert post(llm, "openai", "/v1/responses", ["not", "an", "object"]).status_code == 400


def test_fail_next(llm: LLMStandIn) -> None:
    overloaded = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    llm.fail_next(529, overloaded)
    llm.fail_next(502, b"<html>bad gateway</html>", "text/html")
    body = {"model": "m", "messages": [], "stream": True}
    first = post(llm, "anthropic", "/v1/messages", body)
    assert (first.status_code, first.content) == (529, overloaded)
    second = post(llm, "anthropic", "/v1/messages", body)
    assert (second.status_code, second.headers["content-type"]) == (502, "text/html")
    assert post(llm, "anthropic", "/v1/messages", body).status_code == 200
    assert [c.status for c in llm.calls] == [529, 502, 200]
    assert llm.calls[0].answer == overloaded


def test_a_client_leaving_mid_stream_is_recorded(llm: LLMStandIn) -> None:
    llm.stream_delay, llm.stream_chunks = 0.02, 50
    body = {"model": "m", "messages": [], "stream": True}
    with httpx.stream(
        "POST", llm.upstream("anthropic") + "/v1/messages", json=body, headers={"x-api-key": "k"}
    ) as r:
        next(r.iter_raw())
    assert llm.finished(3)
    [call] = llm.calls
    assert not call.completed
    assert call.answer.startswith(b"event: message_start")
    assert b"message_stop" not in call.answer
    assert llm.last_body == call.answer


def test_answers_are_deterministic_and_bodies_may_come_chunked(llm: LLMStandIn) -> None:
    body = {"model": "m", "messages": [], "stream": True}
    first = post(llm, "xai", "/v1/chat/completions", body)
    second = httpx.post(
        llm.upstream("xai") + "/v1/chat/completions",
        content=iter([b'{"model": "m", ', b'"messages": [], "stream": true}']),
        headers={"authorization": "Bearer xai-k"},
    )
    assert llm.calls[1].headers["transfer-encoding"] == "chunked"
    assert llm.calls[1].body == body
    assert first.content == second.content == llm.last_body


def test_expected_and_totals(llm: LLMStandIn) -> None:
    assert TOTALS["anthropic"] == sum(ANTHROPIC_USAGE.values()) == 77
    assert (TOTALS["openai_chat"], TOTALS["openai_responses"], TOTALS["gemini"]) == (43, 42, 28)
    for fmt, usage in USAGE.items():
        n = NORMALISED[fmt]
        assert n["input"] + n["output"] == TOTALS[fmt]
        assert usage.get("total_tokens", usage.get("totalTokenCount", TOTALS[fmt])) == TOTALS[fmt]
    assert len(set(TOTALS.values())) == len(TOTALS)  # distinct, so mix-ups show
    for provider, path in [*ROUTES, ("google", f"{GEMINI}:streamGenerateContent")]:
        expected = llm.expected(provider, path, streamed=True)
        assert expected["total"] == TOTALS[expected["format"]]
    assert llm.expected("google", f"{GEMINI}:generateContent?key=x", False)["usage"] == GEMINI_USAGE
    assert llm.expected("anthropic", "/v1/messages", False)["cached"] == 7
    with pytest.raises(ValueError, match="not metered"):
        llm.expected("openai", "/v1/models", False)


def test_runs_as_a_module() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "tests.standins.llm", "127.0.0.1", str(port)])
    try:
        deadline = time.monotonic() + 5
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/xai/v1/models", headers={"x-api-key": "k"})
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline
                time.sleep(0.02)
        assert r.json()["object"] == "list"
    finally:
        server.terminate()
        server.wait(5)
