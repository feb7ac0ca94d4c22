"""A call's worst case read from its body (clawhq/llm/caps.py) and the output cap a budget
leaves it (clawhq/llm/limits.py): pure functions, every wire format."""

from __future__ import annotations

import json
from typing import Any

import pytest

from clawhq.llm import caps
from clawhq.llm.caps import UNCAPPED_OUTPUT, estimate_input, read_ask, with_cap
from clawhq.llm.limits import output_cap
from clawhq.llm.wires import Wire


def body(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def test_the_input_is_estimated_high_from_keys_and_strings_and_media_apart() -> None:
    # 8 + 4 + 4 + 7 + 2 bytes of keys and strings: 25 / 3, rounded up.
    assert estimate_input({"messages": [{"role": "user", "content": "hi"}]}) == 9
    assert estimate_input({"a": "x" * 300}) == 101  # ceil(301 / 3)
    assert estimate_input({"t": "é" * 30}) == 21  # UTF-8 bytes: 1 + 60, not characters
    photo = "A" * 320_000  # base64: a token per 32 characters
    image = {"type": "image", "source": {"type": "base64", "data": photo}}
    assert estimate_input(image) >= 10_000
    assert estimate_input({"image_url": "data:image/png;base64,AAAA"}) >= caps.MEDIA_PART_TOKENS
    assert estimate_input({"fileUri": "gs://b/f.pdf"}) >= caps.MEDIA_PART_TOKENS
    # Numbers, booleans and null are no text; a deep body does not recurse.
    assert estimate_input({"n": 1, "b": True, "z": None}) == 1
    deep: Any = "x"
    for _ in range(5_000):
        deep = [deep]
    assert estimate_input({"k": deep}) == 1


@pytest.mark.parametrize(
    ("wire", "provider", "path", "obj", "cap", "choices", "minimum"),
    [
        (Wire.ANTHROPIC, "anthropic", "/v1/messages", {"max_tokens": 900}, 900, 1, 1),
        (Wire.OPENAI_CHAT, "openai", "/v1/chat/completions", {"max_tokens": 70}, 70, 1, 1),
        (
            Wire.OPENAI_CHAT,
            "openai",
            "/v1/chat/completions",
            {"max_tokens": 70, "max_completion_tokens": 90, "n": 3},
            90,
            3,
            1,
        ),
        (Wire.OPENAI_CHAT, "openai", "/v1/completions", {"best_of": 4, "n": 2}, None, 4, 1),
        (Wire.OPENAI_RESPONSES, "openai", "/v1/responses", {"max_output_tokens": 50}, 50, 1, 16),
        (
            Wire.GEMINI,
            "google",
            "/v1beta/models/m:generateContent",
            {"generationConfig": {"maxOutputTokens": 33, "candidateCount": 2}},
            33,
            2,
            1,
        ),
        (
            Wire.GEMINI,
            "google",
            "/v1beta/models/m:generateContent",
            {"generation_config": {"max_output_tokens": 44}},
            44,
            1,
            1,
        ),
        (Wire.OPENAI_CHAT, "deepseek", "/chat/completions", {}, None, 1, 1),
        # A cap that is no positive integer is not believed: the body sets none.
        (Wire.ANTHROPIC, "anthropic", "/v1/messages", {"max_tokens": 1e9}, None, 1, 1),
        (Wire.ANTHROPIC, "anthropic", "/v1/messages", {"max_tokens": "10"}, None, 1, 1),
        (Wire.ANTHROPIC, "anthropic", "/v1/messages", {"max_tokens": True}, None, 1, 1),
    ],
)
def test_the_output_cap_and_the_answers_asked_for_are_read_in_each_wire(
    wire: Wire,
    provider: str,
    path: str,
    obj: dict[str, Any],
    cap: int | None,
    choices: int,
    minimum: int,
) -> None:
    ask = read_ask(wire, provider, path, body(obj))
    assert (ask.output_cap, ask.choices, ask.minimum) == (cap, choices, minimum)
    assert ask.input_tokens == estimate_input(obj)


@pytest.mark.parametrize(
    ("wire", "provider", "path", "obj", "added"),
    [
        (Wire.OPENAI_CHAT, "openai", "/v1/chat/completions", {}, {"max_completion_tokens": 7}),
        (Wire.OPENAI_CHAT, "xai", "/v1/chat/completions", {}, {"max_tokens": 7}),
        (Wire.OPENAI_CHAT, "openai", "/v1/completions", {}, {"max_tokens": 7}),
        (Wire.OPENAI_RESPONSES, "openai", "/v1/responses", {}, {"max_output_tokens": 7}),
        (Wire.ANTHROPIC, "deepseek", "/anthropic/v1/messages", {}, {"max_tokens": 7}),
        (
            Wire.GEMINI,
            "google",
            "/v1beta/models/m:generateContent",
            {"generationConfig": {"temperature": 0}},
            {"generationConfig": {"temperature": 0, "maxOutputTokens": 7}},
        ),
        (
            Wire.GEMINI,
            "google",
            "/v1beta/models/m:generateContent",
            {"generation_config": {}},
            {"generation_config": {"max_output_tokens": 7}},
        ),
        (
            Wire.GEMINI,
            "google",
            "/v1beta/models/m:generateContent",
            {},
            {"generationConfig": {"maxOutputTokens": 7}},
        ),
    ],
)
def test_a_cap_is_added_where_each_wire_reads_it(
    wire: Wire, provider: str, path: str, obj: dict[str, Any], added: dict[str, Any]
) -> None:
    raw = body({"contents": "x", **obj})
    written = with_cap(read_ask(wire, provider, path, raw), 7, raw, add=True)
    assert written is not None
    assert json.loads(written) == {"contents": "x", **added}
    unchanged = with_cap(read_ask(wire, provider, path, raw), 7, raw, add=False)
    assert unchanged is not None and json.loads(unchanged) == {"contents": "x", **obj}


def test_every_cap_field_is_lowered_and_none_raised() -> None:
    obj = {
        "max_tokens": 5,
        "max_completion_tokens": 50_000,
        "generationConfig": {"maxOutputTokens": 9},  # not a chat field: left alone
    }
    raw = body(obj)
    ask = read_ask(Wire.OPENAI_CHAT, "openai", "/v1/chat/completions", raw)
    written = json.loads(with_cap(ask, 100, raw, add=True) or b"")
    assert written == {**obj, "max_completion_tokens": 100}
    # Both of Gemini's spellings, and a cap that is no integer: replaced.
    gemini = {
        "generationConfig": {"maxOutputTokens": 10**6, "max_output_tokens": "lots"},
        "generation_config": {"maxOutputTokens": 1.5e9},
    }
    raw = body(gemini)
    ask = read_ask(Wire.GEMINI, "google", "/v1beta/models/m:streamGenerateContent", raw)
    assert json.loads(with_cap(ask, 64, raw, add=True) or b"") == {
        "generationConfig": {"maxOutputTokens": 64, "max_output_tokens": 64},
        "generation_config": {"maxOutputTokens": 64},
    }


def test_the_body_is_written_anew_so_a_repeated_key_cannot_pass_a_larger_cap() -> None:
    raw = b'{"model":"m","max_tokens":100000,"max_tokens":10,"messages":[]}'
    ask = read_ask(Wire.ANTHROPIC, "anthropic", "/v1/messages", raw)
    assert ask.output_cap == 10  # what Python reads; another parser may take the first
    written = with_cap(ask, 500, raw, add=True)
    assert written == b'{"model":"m","max_tokens":10,"messages":[]}'


def test_a_body_that_is_no_object_is_all_input_and_left_as_it_is() -> None:
    raw = b"[1, 2, 3]" + b" " * 291
    ask = read_ask(Wire.ANTHROPIC, "anthropic", "/v1/messages", raw)
    assert (ask.obj, ask.input_tokens, ask.output_cap) == (None, 100, None)
    assert with_cap(ask, 5, raw, add=True) == raw


def ask_for(obj: dict[str, Any], wire: Wire = Wire.ANTHROPIC) -> caps.Ask:
    path = "/v1/responses" if wire is Wire.OPENAI_RESPONSES else "/v1/messages"
    return read_ask(
        wire, "openai" if wire is Wire.OPENAI_RESPONSES else "anthropic", path, body(obj)
    )


def test_the_output_cap_is_what_was_asked_within_the_budget_and_the_minute() -> None:
    ask = ask_for({"max_tokens": 1_000})  # 10 bytes of key: 4 tokens of input
    assert ask.input_tokens == 4
    assert output_cap(ask, 10**9, None) == 1_000
    assert output_cap(ask, 504, None) == 500  # what is left after the input
    assert output_cap(ask, 5, None) == 1
    assert output_cap(ask, 4, None) is None  # not one token of output left
    assert output_cap(ask, -50, None) is None  # others' reservations took more than was left
    assert output_cap(ask, 10**9, 304) == 300  # a minute's tokens after the input
    assert output_cap(ask, 10**9, 2) == 1  # never below the smallest cap on the minute's account
    uncapped = ask_for({})
    assert output_cap(uncapped, 10**9, None) == UNCAPPED_OUTPUT
    assert output_cap(uncapped, 1_000, None) == 1_000
    two = ask_for({"n": 2, "max_completion_tokens": 400}, Wire.OPENAI_RESPONSES)
    assert output_cap(two, two.input_tokens + 33, None) == 33  # Responses: no n, one answer
    small = ask_for({"max_output_tokens": 100}, Wire.OPENAI_RESPONSES)
    assert output_cap(small, small.input_tokens + 16, None) == 16
    assert output_cap(small, small.input_tokens + 15, None) is None  # OpenAI's minimum is 16


def test_each_answer_asked_for_gets_its_share() -> None:
    raw = body({"n": 4, "max_completion_tokens": 1_000})
    ask = read_ask(Wire.OPENAI_CHAT, "openai", "/v1/chat/completions", raw)
    assert output_cap(ask, ask.input_tokens + 400, None) == 100
    assert output_cap(ask, ask.input_tokens + 3, None) is None
