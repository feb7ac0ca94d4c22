"""Metering of LLM answers: the usage read from each provider's own wire format, however the
stream is cut into chunks, with the bytes relayed unchanged (or with exactly the usage that
ClawHQ asked for on the client's behalf taken out again)."""

from __future__ import annotations

import json
import random
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest

from clawhq.llm import metering
from clawhq.llm.metering import (
    Usage,
    Wire,
    meter_for,
    model_of_request,
    wire_for,
    with_usage_requested,
)
from clawhq.llm.wires import BODY_CAP, EVENT_CAP, FIGURE_CAP

SSE = "text/event-stream"
JSON = "application/json"
EOLS = ["\n", "\r\n", "\r"]


def sse(events: list[list[str]], eol: str = "\n") -> bytes:
    """Events (each a list of lines) as a stream, each ended by a blank line."""
    return "".join(eol.join(lines) + eol + eol for lines in events).encode()


def data(obj: Any, event: str | None = None) -> list[str]:
    lines = [f"event: {event}"] if event else []
    return [*lines, "data: " + json.dumps(obj, separators=(",", ":"))]


def relay(
    wire: Wire, ctype: str, chunks: list[bytes], *, strip: bool = False
) -> tuple[bytes, Usage]:
    """The bytes the client gets and the usage read. Unstripped, every chunk goes on as is."""
    meter = meter_for(wire, ctype, strip_usage=strip)
    out = []
    for chunk in chunks:
        sent = meter.feed(chunk)
        if not strip:
            assert sent == chunk  # unchanged and undelayed
        out.append(sent)
    rest = meter.close()
    if not strip:
        assert rest == b""
    return b"".join([*out, rest]), meter.usage


def every_split(stream: bytes) -> Iterator[list[bytes]]:
    for i in range(len(stream) + 1):
        yield [stream[:i], stream[i:]]


def random_chunkings(stream: bytes, count: int = 60, seed: int = 7) -> Iterator[list[bytes]]:
    rng = random.Random(seed)
    yield [stream[i : i + 1] for i in range(len(stream))]  # a byte at a time
    for _ in range(count):
        chunks, at = [], 0
        while at < len(stream):
            step = rng.choice((1, 2, 3, rng.randint(1, 64), rng.randint(1, 700)))
            chunks.append(stream[at : at + step])
            at += step
        yield chunks


def figures(usage: Usage) -> tuple[int, int, int, int, str | None, bool]:
    return (
        usage.input_tokens,
        usage.output_tokens,
        usage.cache_read_tokens,
        usage.cache_write_tokens,
        usage.model,
        usage.seen,
    )


# -- samples, as each provider sends them --------------------------------------------------

CLAUDE = "claude-sonnet-4-5-20250929"
ANTHROPIC_START_USAGE = {
    "input_tokens": 472,
    "cache_creation_input_tokens": 1024,
    "cache_read_input_tokens": 20480,
    "output_tokens": 2,
}


def anthropic_events(*deltas: dict[str, int | None]) -> list[list[str]]:
    message: dict[str, Any] = {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": CLAUDE,
        "stop_reason": None,
        "stop_sequence": None,
        "usage": ANTHROPIC_START_USAGE,
    }
    text = [
        "Hello",
        ' "usage": {"output_tokens": 999999}',  # the model's text cannot pass for usage
    ]
    return [
        data({"type": "message_start", "message": message}, "message_start"),
        ["event: ping", 'data: {"type": "ping"}'],
        data(
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text"}},
            "content_block_start",
        ),
        *(
            data(
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": t},
                },
                "content_block_delta",
            )
            for t in text
        ),
        data({"type": "content_block_stop", "index": 0}, "content_block_stop"),
        *(
            data(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": usage,
                },
                "message_delta",
            )
            for usage in deltas
        ),
        data({"type": "message_stop"}, "message_stop"),
    ]


ANTHROPIC_SSE = sse(anthropic_events({"output_tokens": 15}))
ANTHROPIC_FIGURES = (472, 15, 20480, 1024, CLAUDE, True)

GPT = "gpt-4o-2024-08-06"
CHUNK_HEAD = '{"id":"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG","object":"chat.completion.chunk",'
CHUNK_HEAD += f'"created":1741570283,"model":"{GPT}","system_fingerprint":"fp_eb9dce56a8",'


def choice(delta: str, finish: str | None = None) -> str:
    end = json.dumps(finish)
    return f'"choices":[{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":{end}}}]'


CHAT_USAGE = (
    '{"prompt_tokens":2006,"completion_tokens":300,"total_tokens":2306,'
    '"prompt_tokens_details":{"cached_tokens":1920,"audio_tokens":0},'
    '"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0}}'
)
#: (what the upstream sends once include_usage is on, what a client that did not ask gets)
CHAT_EVENTS: list[tuple[str, str | None]] = [
    (
        "data: "
        + CHUNK_HEAD
        + choice('{"role":"assistant","content":"","refusal":null}')
        + ',"usage":null}',
        "data: " + CHUNK_HEAD + choice('{"role":"assistant","content":"","refusal":null}') + "}",
    ),
    (
        "data: " + CHUNK_HEAD + choice('{"content":"Hi \\"usage\\":null"}') + ', "usage" : null }',
        "data: " + CHUNK_HEAD + choice('{"content":"Hi \\"usage\\":null"}') + " }",
    ),
    (  # usage first, as another serialiser might write it
        'data: {"usage": null, "id":"chatcmpl-B9","object":"chat.completion.chunk",'
        + choice('{"content":"!"}')
        + "}",
        'data: {"id":"chatcmpl-B9","object":"chat.completion.chunk",'
        + choice('{"content":"!"}')
        + "}",
    ),
    (
        "data: " + CHUNK_HEAD + choice("{}", "stop") + ',"usage":null}',
        "data: " + CHUNK_HEAD + choice("{}", "stop") + "}",
    ),
    ("data: " + CHUNK_HEAD + f'"choices":[],"usage":{CHAT_USAGE}}}', None),
    ("data: [DONE]", "data: [DONE]"),
]
CHAT_FIGURES = (86, 300, 1920, 0, GPT, True)


def chat_stream(
    eol: str = "\n", stripped: bool = False, events: list[tuple[str, str | None]] = CHAT_EVENTS
) -> bytes:
    lines = [after if stripped else before for before, after in events]
    return sse([[line] for line in lines if line is not None], eol)


RESPONSES_MODEL = "gpt-5-2025-08-07"
RESPONSES_USAGE = {
    "input_tokens": 1200,
    "input_tokens_details": {"cached_tokens": 1024},
    "output_tokens": 900,
    "output_tokens_details": {"reasoning_tokens": 640},
    "total_tokens": 2100,
}


def response(status: str, usage: dict[str, Any] | None, **echo: Any) -> dict[str, Any]:
    """A Response object; ``echo``: what it repeats of the request (tools, metadata...)."""
    return {
        "id": "resp_67ccd2bed1ec8190b14f964abc054267",
        "object": "response",
        "created_at": 1741290958,
        "status": status,
        "model": RESPONSES_MODEL,
        "output": echo.pop("output", []),
        "tools": echo.pop("tools", []),
        "usage": usage,
        "user": None,
        "metadata": echo.pop("metadata", {}),
    }


def responses_events(final: str = "response.completed", **echo: Any) -> list[list[str]]:
    item = {"type": "message", "id": "msg_1", "status": "in_progress", "role": "assistant"}
    return [
        data(
            {
                "type": "response.created",
                "sequence_number": 0,
                "response": response("in_progress", None, **echo),
            },
            "response.created",
        ),
        data(
            {
                "type": "response.in_progress",
                "sequence_number": 1,
                "response": response("in_progress", None, **echo),
            },
            "response.in_progress",
        ),
        data(
            {"type": "response.output_item.added", "output_index": 0, "item": item},
            "response.output_item.added",
        ),
        *(
            data(
                {"type": "response.output_text.delta", "item_id": "msg_1", "delta": d},
                "response.output_text.delta",
            )
            for d in ("Hi", " there")
        ),
        data(
            {
                "type": final,
                "sequence_number": 9,
                "response": response("completed", RESPONSES_USAGE, **echo),
            },
            final,
        ),
    ]


RESPONSES_SSE = sse(responses_events())
RESPONSES_FIGURES = (176, 900, 1024, 0, RESPONSES_MODEL, True)

GEMINI_MODEL = "gemini-2.5-pro"


def gemini_chunk(text: str, usage: dict[str, int], last: bool = False) -> dict[str, Any]:
    candidate: dict[str, Any] = {
        "content": {"parts": [{"text": text}], "role": "model"},
        "index": 0,
    }
    if last:
        candidate["finishReason"] = "STOP"
    return {
        "candidates": [candidate],
        "usageMetadata": usage,
        "modelVersion": GEMINI_MODEL,
        "responseId": "6Ck1aK2xBNKUmNAPn8iy8Qw",
    }


GEMINI_FINAL_USAGE = {
    "promptTokenCount": 5000,
    "candidatesTokenCount": 120,
    "totalTokenCount": 5470,
    "cachedContentTokenCount": 4096,
    "thoughtsTokenCount": 300,
    "toolUsePromptTokenCount": 50,
}
GEMINI_CHUNKS = [
    gemini_chunk("Hello", {"promptTokenCount": 5000, "totalTokenCount": 5000}),
    gemini_chunk(
        " there", {"promptTokenCount": 5000, "candidatesTokenCount": 60, "totalTokenCount": 5060}
    ),
    gemini_chunk(".", GEMINI_FINAL_USAGE, last=True),
]
GEMINI_SSE = sse([data(c) for c in GEMINI_CHUNKS], "\r\n")  # Google ends events CRLF CRLF
GEMINI_ARRAY = ("[" + "\n,\r\n".join(json.dumps(c, indent=2) for c in GEMINI_CHUNKS) + "]").encode()
GEMINI_FIGURES = (954, 420, 4096, 0, GEMINI_MODEL, True)  # 954 + 420 + 4096 == 5470

SAMPLES = [
    pytest.param(Wire.ANTHROPIC, SSE, ANTHROPIC_SSE, ANTHROPIC_FIGURES, id="anthropic"),
    pytest.param(Wire.OPENAI_CHAT, SSE, chat_stream(), CHAT_FIGURES, id="openai-chat"),
    pytest.param(Wire.OPENAI_RESPONSES, SSE, RESPONSES_SSE, RESPONSES_FIGURES, id="responses"),
    pytest.param(Wire.GEMINI, SSE, GEMINI_SSE, GEMINI_FIGURES, id="gemini-sse"),
    pytest.param(Wire.GEMINI, JSON, GEMINI_ARRAY, GEMINI_FIGURES, id="gemini-array"),
]


# -- every wire, however it is cut ---------------------------------------------------------


@pytest.mark.parametrize(("wire", "ctype", "stream", "expected"), SAMPLES)
def test_every_split_meters_exactly_and_relays_every_byte(
    wire: Wire, ctype: str, stream: bytes, expected: tuple[Any, ...]
) -> None:
    for chunks in [*every_split(stream), *random_chunkings(stream)]:
        out, usage = relay(wire, ctype, chunks)
        assert out == stream
        assert figures(usage) == expected, chunks


@pytest.mark.parametrize("eol", EOLS)
@pytest.mark.parametrize("wire", [Wire.ANTHROPIC, Wire.OPENAI_RESPONSES, Wire.GEMINI])
def test_any_line_ending_and_any_chunking(wire: Wire, eol: str) -> None:
    events, expected = {
        Wire.ANTHROPIC: (anthropic_events({"output_tokens": 15}), ANTHROPIC_FIGURES),
        Wire.OPENAI_RESPONSES: (responses_events(), RESPONSES_FIGURES),
        Wire.GEMINI: ([data(c) for c in GEMINI_CHUNKS], GEMINI_FIGURES),
    }[wire]
    stream = sse(events, eol)
    for chunks in [*every_split(stream), *random_chunkings(stream, 20)]:
        out, usage = relay(wire, SSE, chunks)
        assert out == stream
        assert figures(usage) == expected


def test_total_tokens_adds_all_four() -> None:
    assert Usage(1, 2, 3, 4).total_tokens == 10
    _, usage = relay(Wire.GEMINI, SSE, [GEMINI_SSE])
    assert usage.total_tokens == GEMINI_FINAL_USAGE["totalTokenCount"]
    _, usage = relay(Wire.OPENAI_CHAT, SSE, [chat_stream()])
    assert usage.total_tokens == 2306


# -- Anthropic -----------------------------------------------------------------------------


def test_anthropic_message_delta_is_cumulative_and_its_fields_replace() -> None:
    stream = sse(
        anthropic_events(
            {"output_tokens": 40},
            {"input_tokens": 480, "cache_read_input_tokens": 20000, "output_tokens": 57},
            {"output_tokens": 61, "cache_creation_input_tokens": None},  # null: not a figure
        )
    )
    for chunks in random_chunkings(stream, 20):
        _, usage = relay(Wire.ANTHROPIC, SSE, chunks)
        assert figures(usage) == (480, 61, 20000, 1024, CLAUDE, True)
        assert usage.total_tokens == 480 + 61 + 20000 + 1024


def test_anthropic_body() -> None:
    body = {
        "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
        "type": "message",
        "role": "assistant",
        "model": CLAUDE,
        "content": [
            {"type": "tool_use", "id": "t1", "name": "f", "input": {"usage": {"input_tokens": 1}}}
        ],
        "stop_reason": "tool_use",
        "usage": {
            "input_tokens": 12,
            "cache_creation_input_tokens": 7,
            "cache_read_input_tokens": 300,
            "output_tokens": 44,
        },
    }
    raw = json.dumps(body, indent=2).encode()
    out, usage = relay(Wire.ANTHROPIC, "application/json; charset=utf-8", [raw[:50], raw[50:]])
    assert out == raw
    assert figures(usage) == (12, 44, 300, 7, CLAUDE, True)


# -- OpenAI Chat Completions ---------------------------------------------------------------


def test_chat_body_with_cached_tokens() -> None:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": GPT,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}}],
        "usage": json.loads(CHAT_USAGE),
    }
    _, usage = relay(Wire.OPENAI_CHAT, JSON, [json.dumps(body).encode()])
    assert figures(usage) == CHAT_FIGURES
    assert usage.total_tokens == 2306


@pytest.mark.parametrize("eol", EOLS)
def test_strip_takes_out_exactly_the_usage_we_asked_for(eol: str) -> None:
    sent, wanted = chat_stream(eol), chat_stream(eol, stripped=True)
    assert sent != wanted
    for chunks in [*every_split(sent), *random_chunkings(sent, 30)]:
        out, usage = relay(Wire.OPENAI_CHAT, SSE, chunks, strip=True)
        assert out == wanted
        assert figures(usage) == CHAT_FIGURES


def test_stripping_never_holds_more_than_the_event_under_way() -> None:
    meter = meter_for(Wire.OPENAI_CHAT, SSE, strip_usage=True)
    first, rest = chat_stream().split(b"\n\n", 1)
    assert meter.feed(first) == b""  # not ended yet: held
    assert meter.feed(b"\n\n" + rest[:10]).startswith(b"data: {")  # ended: sent on


def test_the_request_is_made_to_ask_for_usage_and_only_when_it_did_not() -> None:
    body = json.dumps(
        {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "é"}]}
    )
    changed, strip = with_usage_requested(Wire.OPENAI_CHAT, body.encode())
    assert strip is True
    assert json.loads(changed) == {**json.loads(body), "stream_options": {"include_usage": True}}
    assert b" " not in changed  # compact

    kept = {"model": "m", "stream": True, "stream_options": {"include_obfuscation": False}}
    changed, strip = with_usage_requested(Wire.OPENAI_CHAT, json.dumps(kept).encode())
    assert strip is True
    assert json.loads(changed)["stream_options"] == {
        "include_obfuscation": False,
        "include_usage": True,
    }

    off = json.dumps({"stream": True, "stream_options": {"include_usage": False}}).encode()
    assert json.loads(with_usage_requested(Wire.OPENAI_CHAT, off)[0])["stream_options"] == {
        "include_usage": True
    }


@pytest.mark.parametrize(
    ("wire", "body"),
    [
        (Wire.OPENAI_CHAT, b'{"model":"m","stream":true,"stream_options":{"include_usage":true}}'),
        (Wire.OPENAI_CHAT, b'{"model":"m","stream":false}'),
        (Wire.OPENAI_CHAT, b'{"model":"m"}'),
        (Wire.OPENAI_CHAT, b'{"model":"m","stream":"true"}'),
        (Wire.OPENAI_CHAT, b"[1, 2]"),
        (Wire.OPENAI_CHAT, b'{"stream": true'),
        (Wire.OPENAI_CHAT, b"\xff\xfe{"),
        (Wire.OPENAI_CHAT, b""),
        (Wire.OPENAI_RESPONSES, b'{"model":"m","stream":true}'),
        (Wire.ANTHROPIC, b'{"model":"m","stream":true}'),
        (Wire.GEMINI, b'{"stream":true}'),
    ],
)
def test_other_requests_go_unchanged(wire: Wire, body: bytes) -> None:
    changed, strip = with_usage_requested(wire, body)
    assert changed is body
    assert strip is False


def test_a_client_that_asked_for_usage_gets_it_untouched() -> None:
    body = b'{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true}}'
    assert with_usage_requested(Wire.OPENAI_CHAT, body) == (body, False)
    stream = chat_stream()
    out, usage = relay(Wire.OPENAI_CHAT, SSE, [stream])
    assert out == stream
    assert figures(usage) == CHAT_FIGURES


def test_the_last_usage_that_is_not_null_counts() -> None:
    # xAI and DeepSeek may put usage on chunks that also have choices, and again and again.
    def chunk(text: str, usage: str, finish: str | None = None) -> list[str]:
        return [
            "data: "
            + CHUNK_HEAD
            + choice(json.dumps({"content": text}), finish)
            + f',"usage":{usage}}}'
        ]

    xai = '{"prompt_tokens":33,"completion_tokens":16,"total_tokens":55,'
    xai += '"prompt_tokens_details":{"text_tokens":33,"cached_tokens":10},'
    xai += '"completion_tokens_details":{"reasoning_tokens":6}}'
    events = [
        chunk("Hi", '{"prompt_tokens":33,"completion_tokens":1,"total_tokens":34}'),
        chunk("!", xai, "stop"),
        chunk("", "null"),
        ["data: [DONE]"],
    ]
    stream = sse(events)
    for chunks in random_chunkings(stream, 20):
        _, usage = relay(Wire.OPENAI_CHAT, SSE, chunks)
        # xAI leaves reasoning out of completion_tokens but in its total: output holds it.
        assert figures(usage) == (23, 22, 10, 0, GPT, True)
        assert usage.total_tokens == 55
    # Stripping keeps a chunk that has choices, usage and all; only the nulls go.
    out, _ = relay(Wire.OPENAI_CHAT, SSE, [stream], strip=True)
    assert out == stream.replace(b',"usage":null', b"")
    assert out.count(b'"usage"') == 2


def test_deepseek_cache_hit_fields() -> None:
    usage_obj = {
        "prompt_tokens": 1500,
        "completion_tokens": 200,
        "total_tokens": 1700,
        "prompt_cache_hit_tokens": 1280,
        "prompt_cache_miss_tokens": 220,
    }
    body = {
        "id": "x",
        "object": "chat.completion",
        "model": "deepseek-chat",
        "choices": [],
        "usage": usage_obj,
    }
    _, usage = relay(Wire.OPENAI_CHAT, JSON, [json.dumps(body).encode()])
    assert figures(usage) == (220, 200, 1280, 0, "deepseek-chat", True)
    # Streamed, with both OpenAI's and DeepSeek's cache fields: counted once.
    both = {**usage_obj, "prompt_tokens_details": {"cached_tokens": 1280}}
    stream = sse(
        [
            data({"id": "x", "model": "deepseek-chat", "choices": [], "usage": both}),
            ["data: [DONE]"],
        ]
    )
    _, usage = relay(Wire.OPENAI_CHAT, SSE, [stream])
    assert figures(usage) == (220, 200, 1280, 0, "deepseek-chat", True)


# -- OpenAI Responses ----------------------------------------------------------------------


@pytest.mark.parametrize("final", ["response.completed", "response.incomplete", "response.failed"])
def test_responses_final_event_carries_the_usage(final: str) -> None:
    _, usage = relay(Wire.OPENAI_RESPONSES, SSE, [sse(responses_events(final))])
    assert figures(usage) == RESPONSES_FIGURES
    assert usage.total_tokens == 2100


def test_responses_stream_cut_before_completion_saw_no_usage() -> None:
    _, usage = relay(Wire.OPENAI_RESPONSES, SSE, [sse(responses_events()[:-1])])
    assert usage.seen is False
    assert usage.total_tokens == 0


def test_responses_echoing_a_usage_key_of_the_client_still_meters() -> None:
    # The Response object repeats the request's tools: their schema is the client's JSON.
    tool = {
        "type": "function",
        "name": "report",
        "parameters": {"type": "object", "examples": [{"usage": None}]},
    }
    stream = sse(responses_events(tools=[tool], metadata={"usage": "x"}))
    assert stream.count(b'"usage":null') == 5  # created, in_progress: 2 each; completed: 1
    for chunks in random_chunkings(stream, 10):
        _, usage = relay(Wire.OPENAI_RESPONSES, SSE, chunks)
        assert figures(usage) == RESPONSES_FIGURES


def test_responses_body() -> None:
    body = json.dumps(response("completed", RESPONSES_USAGE)).encode()
    _, usage = relay(Wire.OPENAI_RESPONSES, JSON, [body])
    assert figures(usage) == RESPONSES_FIGURES


# -- Gemini --------------------------------------------------------------------------------


def test_gemini_body() -> None:
    body = json.dumps(gemini_chunk("Hello there.", GEMINI_FINAL_USAGE, last=True)).encode()
    _, usage = relay(Wire.GEMINI, JSON, [body])
    assert figures(usage) == GEMINI_FIGURES


def test_gemini_array_without_usage_on_its_last_chunk() -> None:
    chunks = [*GEMINI_CHUNKS, {"candidates": [{"content": {"parts": [{"text": ""}]}}]}]
    _, usage = relay(Wire.GEMINI, JSON, [json.dumps(chunks).encode()])
    assert figures(usage) == GEMINI_FIGURES


# -- SSE framing ---------------------------------------------------------------------------


def test_sse_fields_comments_and_data_over_several_lines() -> None:
    stream = (
        b": keep-alive\n\n"
        b"event: message_start\nid: 1\nretry: 100\n"
        b'data:{"type":"message_start","message":{"model":"claude-x",\n'
        b'data: "usage":{"input_tokens":3,"output_tokens":1}}}\n\n'
        b'event: message_delta\ndata: {"type":"message_delta",\n: a comment\n'
        b'data:  "usage":{"output_tokens":9}}\n\n'
    )
    for chunks in every_split(stream):
        out, usage = relay(Wire.ANTHROPIC, SSE, chunks)
        assert out == stream
        assert figures(usage) == (3, 9, 0, 0, "claude-x", True)


#: Blank lines written every way SSE allows: a line ending, then an empty line.
MIXED_ENDS = ["\n\r", "\r\n\n", "\r\r\n", "\n\n", "\r\r", "\r\n\r\n"]


def test_line_endings_mixed_in_one_stream() -> None:
    def mixed(stripped: bool) -> bytes:
        pairs = zip(CHAT_EVENTS, MIXED_ENDS, strict=True)
        events = [(after if stripped else before, end) for (before, after), end in pairs]
        return "".join(line + end for line, end in events if line is not None).encode()

    sent, wanted = mixed(False), mixed(True)
    for chunks in [*every_split(sent), *random_chunkings(sent, 30)]:
        out, usage = relay(Wire.OPENAI_CHAT, SSE, chunks)
        assert out == sent
        assert figures(usage) == CHAT_FIGURES
        out, usage = relay(Wire.OPENAI_CHAT, SSE, chunks, strip=True)
        assert out == wanted
        assert figures(usage) == CHAT_FIGURES


def test_an_event_left_unended_at_the_end_is_still_read() -> None:
    stream = sse([data(c) for c in GEMINI_CHUNKS], "\r\n").rstrip(b"\r\n")
    _, usage = relay(Wire.GEMINI, SSE, [stream])
    assert figures(usage) == GEMINI_FIGURES
    chat = chat_stream().removesuffix(b"data: [DONE]\n\n").rstrip(b"\n")
    out, usage = relay(Wire.OPENAI_CHAT, SSE, [chat], strip=True)
    assert figures(usage) == CHAT_FIGURES
    assert b'"usage"' not in out


def pieces(stream: bytes, size: int = 65536) -> list[bytes]:
    return [stream[i : i + size] for i in range(0, len(stream), size)]


def test_an_over_cap_event_is_relayed_intact_and_only_its_tail_read() -> None:
    big = data(
        {"type": "message_delta", "usage": {"output_tokens": 10**6}, "pad": "x" * (2 * EVENT_CAP)}
    )
    for eol in EOLS:
        head = sse([*anthropic_events({"output_tokens": 15})[:-1], big], eol)
        deltas = [{"input_tokens": 500, "output_tokens": 21}, {"output_tokens": 22}]
        after = sse([data({"type": "message_delta", "usage": u}) for u in deltas], eol)
        stream = head + after
        cuts = [[stream[:i], stream[i:]] for i in range(len(head) - 6, len(head) + 3)]
        for chunks in [[stream], pieces(stream), pieces(stream, 1000), *cuts]:
            out, usage = relay(Wire.ANTHROPIC, SSE, chunks)
            assert out == stream
            # The big delta was not parsed; the event after it was.
            assert figures(usage) == (500, 22, 20480, 1024, CLAUDE, True)


def test_usage_at_the_end_of_an_over_cap_event_is_read() -> None:
    # An image made by a tool comes back whole in response.completed; the usage follows it.
    image = {"type": "image_generation_call", "id": "ig_1", "result": "iVBORw0KGgo" * 300_000}
    events = responses_events(output=[image], metadata={"usage": "a tag of the client's"})
    gemini = gemini_chunk("", GEMINI_FINAL_USAGE, last=True)
    gemini["candidates"][0]["content"]["parts"] = [
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo" * 300_000}}
    ]
    cases = [
        (Wire.OPENAI_RESPONSES, sse(events), RESPONSES_FIGURES[:4]),
        (Wire.GEMINI, sse([data(GEMINI_CHUNKS[0]), data(gemini)], "\r\n"), GEMINI_FIGURES[:4]),
    ]
    for wire, stream, expected in cases:
        assert len(stream) > 2 * EVENT_CAP
        for chunks in ([stream], pieces(stream), [stream.rstrip(b"\r\n")]):
            out, usage = relay(wire, SSE, chunks)
            assert out == b"".join(chunks)
            assert figures(usage)[:4] == expected
            assert usage.seen is True


def test_an_over_cap_event_is_not_held_when_stripping() -> None:
    big = (
        "data: "
        + CHUNK_HEAD
        + choice(json.dumps({"content": "y" * (2 * EVENT_CAP)}))
        + ',"usage":null}'
    )
    events = [CHAT_EVENTS[0], (big, big), *CHAT_EVENTS[1:]]  # too big to edit: sent as it is
    sent, wanted = chat_stream(events=events), chat_stream(stripped=True, events=events)
    meter = meter_for(Wire.OPENAI_CHAT, SSE, strip_usage=True)
    sent_on: list[bytes] = []
    for at in range(0, len(sent), 65536):
        sent_on.append(meter.feed(sent[at : at + 65536]))
        if EVENT_CAP + 65536 < at < 2 * EVENT_CAP:
            assert sum(map(len, sent_on)) > at - EVENT_CAP  # sent on, not held
    sent_on.append(meter.close())
    assert b"".join(sent_on) == wanted
    assert figures(meter.usage) == CHAT_FIGURES
    # Cut anywhere near its end, the big event still ends where it ends.
    for eol in EOLS:
        sent, wanted = (chat_stream(eol, s, events) for s in (False, True))
        end = sent.index(b"data: ", 2 * EVENT_CAP)
        for cut in range(end - 6, end + 2):
            out, _ = relay(Wire.OPENAI_CHAT, SSE, [sent[:cut], sent[cut:]], strip=True)
            assert out == wanted


def test_memory_stays_bounded() -> None:
    endless_event = b"data: " + b"z" * (20 << 20)
    big_body = b'{"model":"m","content":"' + b"w" * (20 << 20) + b'","usage":{"input_tokens":5}}'
    for ctype, stream in ((SSE, endless_event), (JSON, big_body)):
        meter = meter_for(Wire.ANTHROPIC, ctype, strip_usage=True)
        tracemalloc.start()
        try:
            for at in range(0, len(stream), 65536):
                meter.feed(stream[at : at + 65536])
            meter.close()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < (4 * EVENT_CAP if ctype == SSE else BODY_CAP + 4 * EVENT_CAP)  # of 20 MiB
    assert figures(meter.usage) == (5, 0, 0, 0, None, True)  # the model was in the head


# -- whole bodies over the cap -------------------------------------------------------------


def test_body_over_the_cap_has_its_usage_read_from_its_tail() -> None:
    body = {
        "id": "msg_1",
        "type": "message",
        "model": CLAUDE,
        "content": [{"type": "text", "text": "é" * (BODY_CAP // 2 + 100)}],  # 2 bytes each
        "usage": {"input_tokens": 9, "cache_read_input_tokens": 4, "output_tokens": 300000},
    }
    raw = json.dumps(body, ensure_ascii=False).encode()
    assert len(raw) > BODY_CAP
    out, usage = relay(
        Wire.ANTHROPIC, JSON, [raw[i : i + 65535] for i in range(0, len(raw), 65535)]
    )
    assert out == raw
    assert figures(usage) == (9, 300000, 4, 0, None, True)  # its model went with its head


def test_responses_body_over_the_cap_skips_a_usage_key_that_is_no_usage() -> None:
    output = [{"type": "message", "content": [{"type": "output_text", "text": "t" * BODY_CAP}]}]
    body = response("completed", RESPONSES_USAGE, output=output, metadata={"usage": "tag"})
    raw = json.dumps(body).encode()
    _, usage = relay(Wire.OPENAI_RESPONSES, JSON, pieces(raw))
    assert figures(usage) == (*RESPONSES_FIGURES[:4], None, True)


def test_gemini_array_over_the_cap() -> None:
    filler = gemini_chunk("word " * 200, {"promptTokenCount": 5000, "totalTokenCount": 5000})
    chunks = [filler] * (BODY_CAP // 1000) + [GEMINI_CHUNKS[-1]]
    raw = ("[" + ",\r\n".join(json.dumps(c) for c in chunks) + "]").encode()
    assert len(raw) > BODY_CAP
    _, usage = relay(Wire.GEMINI, JSON, [raw[i : i + 100_000] for i in range(0, len(raw), 100_000)])
    assert figures(usage) == GEMINI_FIGURES


# -- hostile answers -----------------------------------------------------------------------

RNG = random.Random(1234)
GARBAGE = [
    bytes(RNG.randrange(256) for _ in range(50_000)),
    b"\xff\xfe\xfd" * 1000,
    b'data: \xff\xfe{"usage":\n\n',
    b'data: {"usage":' + b"[" * 100_000 + b"\n\n",
    b'{"usage":' + b"[" * 100_000,
    b'data: {"usage":{"input_tokens":' + b"9" * 5000 + b"}}\n\n",
    b'{"usage":{"prompt_tokens":' + b"9" * 5000 + b"}}",
    b'data: {"usage":"many","usageMetadata":[1],"message":"m","response":7}\n\n',
    b'data: {"type":"message_start","message":{"usage":[3]}}\n\n',
    b'{"usage":null,"usageMetadata":null,"response":{"usage":"x"}}',
    b'[{"usageMetadata":"x"},7,null,[]]',
    b'data: {"usage":{}}\n\ndata: {"usageMetadata":{"foo":1}}\n\n',
    b'data: {"choices":[],"usage":{"bogus":1}}\n\n',
    b"\r" * 10_000 + b"\n" * 10_000,
    b"data: " + b"a" * (3 * EVENT_CAP),
    b"[" + b'{"usageMetadata":' * 10_000,
    b"",
]


@pytest.mark.parametrize("strip", [False, True])
@pytest.mark.parametrize("ctype", [SSE, JSON])
@pytest.mark.parametrize("wire", list(Wire))
def test_garbage_never_raises_and_sees_no_usage(wire: Wire, ctype: str, strip: bool) -> None:
    for stream in GARBAGE:
        for chunks in ([stream], [stream[i : i + 4096] for i in range(0, len(stream), 4096)]):
            out, usage = relay(wire, ctype, chunks, strip=strip)
            if not strip:
                assert out == stream
            assert usage.seen is False, stream[:80]
            assert usage.total_tokens == 0


def test_a_fault_in_the_meter_never_breaks_the_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(_: bytes) -> bytes:
        raise RuntimeError("a bug")

    monkeypatch.setattr(metering, "_data", broken)
    sent = chat_stream()
    # Stripped up to the usage chunk, whose reading fails: from there on all goes as it came.
    given_up = chat_stream(stripped=True, events=CHAT_EVENTS[:4]) + chat_stream(
        events=CHAT_EVENTS[4:]
    )
    for strip, wanted in ((False, sent), (True, given_up)):
        out, usage = relay(Wire.OPENAI_CHAT, SSE, [sent[:-40], sent[-40:]], strip=strip)
        assert out == wanted
        assert usage.seen is False


def test_figures_of_the_wrong_kind_count_as_nothing() -> None:
    weird = {
        "input_tokens": -5,
        "output_tokens": True,
        "cache_read_input_tokens": 1.5,
        "cache_creation_input_tokens": "12",
    }
    _, usage = relay(Wire.ANTHROPIC, JSON, [json.dumps({"usage": weird, "model": 7}).encode()])
    assert figures(usage) == (0, 0, 0, 0, None, True)
    huge = {"input_tokens": 10**30, "output_tokens": 10**13}
    _, usage = relay(
        Wire.ANTHROPIC, JSON, [json.dumps({"usage": huge, "model": "m" * 500}).encode()]
    )
    assert figures(usage) == (FIGURE_CAP, FIGURE_CAP, 0, 0, "m" * 128, True)
    # More cached than prompted: no negative input.
    odd = {
        "prompt_tokens": 10,
        "completion_tokens": 3,
        "prompt_tokens_details": {"cached_tokens": 50},
    }
    _, usage = relay(Wire.OPENAI_CHAT, JSON, [json.dumps({"usage": odd}).encode()])
    assert figures(usage)[:4] == (0, 3, 10, 0)


def test_only_a_real_usage_key_is_read_in_an_over_cap_body() -> None:
    text = 'say "usage":{"input_tokens":999} ' * 10
    body = {
        "model": "m",
        "content": [{"type": "text", "text": "x" * BODY_CAP + text}],
        "usage": None,
    }
    _, usage = relay(Wire.ANTHROPIC, JSON, [json.dumps(body).encode()])
    assert usage.seen is False


# -- requests ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "path", "wire"),
    [
        ("anthropic", "/v1/messages", Wire.ANTHROPIC),
        ("anthropic", "/v1/messages/count_tokens", None),
        ("anthropic", "/v1/messages/batches", None),
        ("anthropic", "/v1/models", None),
        ("openai", "/v1/chat/completions", Wire.OPENAI_CHAT),
        ("openai", "/v1/responses", Wire.OPENAI_RESPONSES),
        ("openai", "/v1/responses/resp_123", None),
        ("openai", "/v1/models", None),
        ("openai", "/v1/messages", None),
        ("deepseek", "/chat/completions", Wire.OPENAI_CHAT),
        ("deepseek", "/v1/chat/completions", Wire.OPENAI_CHAT),
        ("deepseek", "/models", None),
        ("xai", "/v1/chat/completions", Wire.OPENAI_CHAT),
        ("xai", "/v1/responses", Wire.OPENAI_RESPONSES),
        ("xai", "/v1/models", None),
        ("google", "/v1beta/models/gemini-2.5-pro:streamGenerateContent", Wire.GEMINI),
        ("google", "/v1beta/models/gemini-2.5-flash:generateContent", Wire.GEMINI),
        ("google", "/v1/models/gemini-2.5-flash:generateContent", Wire.GEMINI),
        ("google", "/v1beta/models/gemini-2.5-pro:countTokens", None),
        ("google", "/v1beta/models/gemini-2.5-pro:embedContent", None),
        ("google", "/v1beta/models", None),
        ("google", "/v1beta/models/gemini-2.5-pro", None),
        ("google", "/v1/chat/completions", None),
        ("nobody", "/v1/messages", None),
        # A generation spelt another way is still one.
        ("anthropic", "/v1/messages/", Wire.ANTHROPIC),
        ("anthropic", "//v1//messages", Wire.ANTHROPIC),
        ("openai", "/v1/x/../chat/completions", Wire.OPENAI_CHAT),
        ("openai", "/v1/Chat/Completions?x=1", Wire.OPENAI_CHAT),
        ("google", "/v1beta/models/gemini-2.5-pro%3AstreamGenerateContent", Wire.GEMINI),
    ],
)
def test_wire_for(provider: str, path: str, wire: Wire | None) -> None:
    assert wire_for(provider, path) is wire


@pytest.mark.parametrize(
    ("wire", "body", "path", "model"),
    [
        (
            Wire.ANTHROPIC,
            b'{"model":"claude-opus-4-1","max_tokens":5}',
            "/v1/messages",
            "claude-opus-4-1",
        ),
        (Wire.OPENAI_CHAT, b'{"messages":[],"model":"gpt-4o"}', "/v1/chat/completions", "gpt-4o"),
        (Wire.OPENAI_RESPONSES, b'{"model":"' + b"m" * 300 + b'"}', "/v1/responses", "m" * 128),
        (
            Wire.GEMINI,
            b'{"contents":[]}',
            "/v1beta/models/gemini-2.5-pro:streamGenerateContent",
            "gemini-2.5-pro",
        ),
        (Wire.GEMINI, b"", "/v1beta/tunedModels/my-Tuned-1:generateContent", "my-Tuned-1"),
        (Wire.OPENAI_CHAT, b'{"model":7}', "/v1/chat/completions", None),
        (Wire.OPENAI_CHAT, b'{"model":""}', "/v1/chat/completions", None),
        (Wire.OPENAI_CHAT, b'["model"]', "/v1/chat/completions", None),
        (Wire.OPENAI_CHAT, b"\xff\xfe", "/v1/chat/completions", None),
        (Wire.ANTHROPIC, b"[" * 100_000, "/v1/messages", None),
        (Wire.GEMINI, b"{}", "/v1beta/models", None),
    ],
)
def test_model_of_request(wire: Wire, body: bytes, path: str, model: str | None) -> None:
    assert model_of_request(wire, body, path) == model
