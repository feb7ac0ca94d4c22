"""What a model call may cost at most, read from its request body: its input, estimated, and
its output cap in the wire format's own field, which ClawHQ may lower. Pure: no I/O, and
nothing here raises on what an agent sends.

The input is estimated from the body, on the high side: every key and string of the JSON
body at a token per :data:`TEXT_BYTES_PER_TOKEN` UTF-8 bytes (tokenizers average 3.5 to 4.5 bytes
a token on English and code, about 3 on CJK), media (base64 data, ``data:`` URIs, file and
image references) at a token per :data:`MEDIA_CHARS_PER_TOKEN` characters and at least
:data:`MEDIA_PART_TOKENS` a part (an image costs up to ~1,600 tokens). What a body only names
is not seen (a stored conversation, ``previous_response_id``, a cached context): that, and
scripts that tokenize at more than a token per 3 bytes, is the estimate's error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from clawhq.llm.wires import Wire, loads

TEXT_BYTES_PER_TOKEN = 3
MEDIA_CHARS_PER_TOKEN = 32
MEDIA_PART_TOKENS = 1_600
#: The most output a call that sets no cap is taken to produce: at or above every current
#: model's own output limit. Such a call's body is left without a cap unless less than this is
#: left (a larger cap than the model's limit is an error at most providers).
UNCAPPED_OUTPUT = 128_000
#: String members that carry media rather than text (or refer to it).
_MEDIA_KEYS = frozenset(
    {"data", "file_data", "image_url", "url", "file_url", "file_uri", "fileUri", "file_id"}
)
#: Gemini's generation settings, under either of the names its JSON takes, and the cap field
#: each spelling adds.
_GEMINI = {"generationConfig": "maxOutputTokens", "generation_config": "max_output_tokens"}
_GEMINI_CAPS = ("maxOutputTokens", "max_output_tokens")


@dataclass(frozen=True)
class Ask:
    """What a call's body asks for."""

    obj: dict[str, Any] | None  # the parsed body (None: not a JSON object)
    input_tokens: int  # estimated
    output_cap: int | None  # the largest output cap the body sets (None: none)
    choices: int  # answers asked for, each up to the cap (``n``, ``candidateCount``)
    minimum: int  # the smallest cap the provider takes
    #: Where the cap fields are: (the member holding them, None: the body itself) -> the field
    #: names to lower there. The first place's first name is the one added when none is set.
    places: tuple[tuple[str | None, tuple[str, ...]], ...] = ()


def estimate_input(obj: Any) -> int:
    """Estimated input tokens of a parsed body (see the module's docstring)."""
    text = media = 0
    stack: list[tuple[str | None, Any]] = [(None, obj)]
    while stack:
        key, value = stack.pop()
        if isinstance(value, str):
            if key in _MEDIA_KEYS or value.startswith("data:"):
                media += max(MEDIA_PART_TOKENS, -(-len(value) // MEDIA_CHARS_PER_TOKEN))
            else:
                text += _size(value)
        elif isinstance(value, dict):
            for member, item in value.items():
                text += _size(member)
                stack.append((member, item))
        elif isinstance(value, list):
            stack.extend((key, item) for item in value)
    return -(-text // TEXT_BYTES_PER_TOKEN) + media


def _size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode(errors="replace"))


def _positive(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def _places(wire: Wire, provider: str, path: str, obj: dict[str, Any]) -> list[Any]:
    """(holder, cap field names) for the body, the place and name to add first."""
    if wire is Wire.GEMINI:
        held = [h for h in _GEMINI if h in obj] or ["generationConfig"]
        return [(h, (_GEMINI[h], *(f for f in _GEMINI_CAPS if f != _GEMINI[h]))) for h in held]
    if wire is Wire.OPENAI_RESPONSES:
        return [(None, ("max_output_tokens",))]
    if wire is Wire.ANTHROPIC:
        return [(None, ("max_tokens",))]
    if "chat/" not in path.lower():  # the legacy completions
        return [(None, ("max_tokens",))]
    # OpenAI's reasoning models take only max_completion_tokens; DeepSeek, xAI and Google's
    # compatible API all take max_tokens.
    if provider == "openai":
        return [(None, ("max_completion_tokens", "max_tokens"))]
    return [(None, ("max_tokens", "max_completion_tokens"))]


def _member(obj: dict[str, Any], holder: str | None) -> dict[str, Any]:
    if holder is None:
        return obj
    found = obj.get(holder)
    return found if isinstance(found, dict) else {}


def read_ask(wire: Wire, provider: str, path: str, body: bytes) -> Ask:
    """What the body asks for; a body that is no JSON object is all input, with no cap."""
    obj = loads(body)
    if not isinstance(obj, dict):
        return Ask(None, -(-len(body) // TEXT_BYTES_PER_TOKEN), None, 1, 1)
    places = tuple(_places(wire, provider, path, obj))
    caps: list[int | None] = []
    choices = 1
    for holder, names in places:
        where = _member(obj, holder)
        caps += [_positive(where[name]) for name in names if name in where]
        if wire is Wire.GEMINI:
            for name in ("candidateCount", "candidate_count"):
                choices = max(choices, _positive(where.get(name)) or 1)
    if wire is Wire.OPENAI_CHAT:
        choices = max(_positive(obj.get("n")) or 1, _positive(obj.get("best_of")) or 1)
    # A cap that is no positive integer is replaced, never believed (a provider may read a
    # float or a string the way this does not).
    output_cap = None if not caps or None in caps else max(c for c in caps if c is not None)
    minimum = 16 if wire is Wire.OPENAI_RESPONSES else 1  # OpenAI refuses a smaller one
    return Ask(obj, estimate_input(obj), output_cap, choices, minimum, places)


def with_cap(ask: Ask, cap: int, body: bytes, *, add: bool) -> bytes | None:
    """The body with every cap field at most ``cap``, and one set to it when there is none and
    ``add``; None if it cannot be written.

    The body is written anew from what was parsed, so the provider reads exactly what ClawHQ
    read (a repeated key, say, is taken by some parsers first and by others last)."""
    if ask.obj is None:
        return body
    obj = dict(ask.obj)
    found = False
    for holder, names in ask.places:
        where = obj if holder is None else dict(_member(obj, holder))
        for name in names:
            if name in where:
                value = _positive(where[name])
                where[name], found = (cap if value is None else min(value, cap)), True
        if holder is not None and holder in obj:
            obj[holder] = where
    if not found and add and ask.places:
        holder, names = ask.places[0]
        if holder is None:
            obj[names[0]] = cap
        else:
            obj[holder] = {**_member(obj, holder), names[0]: cap}
    try:
        return json.dumps(obj, separators=(",", ":")).encode()
    except (ValueError, RecursionError):
        return None
