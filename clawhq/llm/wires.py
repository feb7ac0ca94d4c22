"""The wire formats the LLM gateway meters: which API path speaks which, what a request asks
for, and where each format keeps its usage. Pure, and never raises on what it is given."""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import unquote

#: The largest figure believed; larger ones are cut to it.
FIGURE_CAP = 10**12
#: SSE events larger than this are relayed but not read.
EVENT_CAP = 1 << 20
#: Whole bodies up to this are parsed at the end; of larger ones only the ends are kept.
BODY_CAP = 8 << 20
TAIL_KEEP = 256 << 10
MODEL_CHARS = 128


class Wire(StrEnum):
    """The wire format of a generation endpoint, which says where its usage is."""

    ANTHROPIC = "anthropic"  # Messages API  POST /v1/messages
    OPENAI_CHAT = "openai_chat"  # Chat Completions (OpenAI, DeepSeek, xAI)
    OPENAI_RESPONSES = "openai_responses"  # POST /v1/responses
    GEMINI = "gemini"  # generateContent / streamGenerateContent


@dataclass
class Usage:
    """The tokens of one answer, the same way for every provider."""

    input_tokens: int = 0  # input NOT served from cache
    output_tokens: int = 0  # includes reasoning/thinking tokens
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    model: str | None = None  # model named by the upstream's answer, if any
    seen: bool = False  # whether any usage figure was found at all
    #: Provider-side tool uses the answer reports (``web_search``: 2…), billed besides tokens.
    tool_uses: dict[str, int] = field(default_factory=dict)

    @property
    def total_tokens(self) -> int:
        """Every token of the call: input, output, cache reads and cache writes."""
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_tokens
            + self.cache_write_tokens
        )


# -- requests ------------------------------------------------------------------------------

_CHAT, _RESPONSES, _MESSAGES = Wire.OPENAI_CHAT, Wire.OPENAI_RESPONSES, Wire.ANTHROPIC
#: Chat Completions paths, with the legacy completions (the same usage and stream_options).
_CHATS = dict.fromkeys(("/v1/chat/completions", "/chat/completions", "/v1/completions"), _CHAT)
_ROUTES: dict[str, dict[str, Wire]] = {
    "anthropic": {"/v1/messages": _MESSAGES},
    "openai": {
        **_CHATS,
        "/completions": _CHAT,
        "/v1/responses": _RESPONSES,
        "/responses": _RESPONSES,
    },
    "deepseek": {
        **_CHATS,
        **dict.fromkeys(("/completions", "/beta/chat/completions", "/beta/completions"), _CHAT),
        "/anthropic/v1/messages": _MESSAGES,
    },
    "xai": {**_CHATS, "/v1/responses": _RESPONSES, "/v1/messages": _MESSAGES},
    "google": {"/v1beta/openai/chat/completions": _CHAT},
}
_GEMINI_PATH = re.compile(
    r"/v1(?:alpha|beta)?/(?:models|tunedmodels)/[^/:]+:(?:stream)?generatecontent"
)
_GEMINI_MODEL = re.compile(r"/(?:models|tunedModels)/([^/:]+):", re.IGNORECASE)


def _normal_path(path: str) -> str:
    """The path as a lenient upstream would read it: no query, decoded, no dot segments."""
    path = unquote(path.split("?", 1)[0].split("#", 1)[0])
    return posixpath.normpath("/" + path.lstrip("/"))


def wire_for(provider: str, path: str) -> Wire | None:
    """The wire format of a generation endpoint, None for paths relayed unmetered.

    ``provider`` is one of "anthropic", "openai", "google", "deepseek", "xai"; ``path`` is the
    request path after ``/llm/<provider>``. Matching is lenient (case, slashes, encoding) so
    that a generation cannot pass for an unmetered call.
    """
    norm = _normal_path(path).lower()
    wire = _ROUTES.get(provider, {}).get(norm)
    if wire is None and provider == "google" and _GEMINI_PATH.fullmatch(norm):
        return Wire.GEMINI
    return wire


def loads(data: bytes | bytearray) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None


def text_of(value: object) -> str | None:
    return value[:MODEL_CHARS] if isinstance(value, str) and value else None


def model_of_request(wire: Wire, body: bytes, path: str) -> str | None:
    """The model asked for: the JSON body's "model", or Gemini's ``models/<model>:`` segment."""
    if wire is Wire.GEMINI:
        match = _GEMINI_MODEL.search(_normal_path(path))
        if match:
            return match.group(1)[:MODEL_CHARS]
    obj = loads(body)
    return text_of(obj.get("model")) if isinstance(obj, dict) else None


def with_usage_requested(wire: Wire, body: bytes) -> tuple[bytes, bool]:
    """A streamed Chat Completions body made to ask for usage, and whether it was changed.

    True means the client did not ask for it: strip the usage from the answer again
    (``meter_for(..., strip_usage=True)``). Any other body comes back unchanged, with False.
    """
    if wire is not Wire.OPENAI_CHAT:
        return body, False
    obj = loads(body)
    if not isinstance(obj, dict) or obj.get("stream") is not True:
        return body, False
    options = obj.get("stream_options")
    options = options if isinstance(options, dict) else {}
    if options.get("include_usage") is True:
        return body, False
    obj["stream_options"] = {**options, "include_usage": True}
    return json.dumps(obj, separators=(",", ":")).encode(), True


# -- usage figures -------------------------------------------------------------------------


def _num(value: object) -> int:
    """A token count as believed: a non-negative int (not a bool), at most FIGURE_CAP."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return min(value, FIGURE_CAP)
    return 0


_ANTHROPIC_FIELDS = (
    ("input_tokens", "input_tokens"),
    ("output_tokens", "output_tokens"),
    ("cache_read_input_tokens", "cache_read_tokens"),
    ("cache_creation_input_tokens", "cache_write_tokens"),
)


_FIGURES = {
    Wire.ANTHROPIC: tuple(key for key, _ in _ANTHROPIC_FIELDS),
    Wire.OPENAI_CHAT: ("prompt_tokens", "completion_tokens", "total_tokens"),
    Wire.OPENAI_RESPONSES: ("input_tokens", "output_tokens", "total_tokens"),
    Wire.GEMINI: ("promptTokenCount", "candidatesTokenCount", "totalTokenCount"),
}


def fill_usage(wire: Wire, usage: Usage, u: dict[str, Any]) -> bool:
    """Sets ``usage`` from a provider's usage object (Anthropic's: field by field)."""
    if all(u.get(key) is None for key in _FIGURES[wire]):
        return False
    usage.seen = True
    if wire is Wire.ANTHROPIC:
        for key, attr in _ANTHROPIC_FIELDS:
            if u.get(key) is not None:  # present in a later message_delta: replaces
                setattr(usage, attr, _num(u[key]))
        tools = u.get("server_tool_use")  # {"web_search_requests": 2, "web_fetch_requests": 1}
        if isinstance(tools, dict):
            for key, count in list(tools.items())[:16]:
                if isinstance(key, str) and key.endswith("_requests") and _num(count):
                    usage.tool_uses[key.removesuffix("_requests")[:32]] = _num(count)
        return True
    if wire is Wire.GEMINI:
        prompt = _num(u.get("promptTokenCount"))
        cached = min(_num(u.get("cachedContentTokenCount")), prompt)
        prompt += _num(u.get("toolUsePromptTokenCount"))
        output = _num(u.get("candidatesTokenCount")) + _num(u.get("thoughtsTokenCount"))
        total = _num(u.get("totalTokenCount"))
    else:
        chat = wire is Wire.OPENAI_CHAT
        prompt = _num(u.get("prompt_tokens" if chat else "input_tokens"))
        details = u.get("prompt_tokens_details" if chat else "input_tokens_details")
        hit = details.get("cached_tokens") if isinstance(details, dict) else None
        if hit is None and chat:
            hit = u.get("prompt_cache_hit_tokens")  # DeepSeek
        cached = min(_num(hit), prompt)
        output = _num(u.get("completion_tokens" if chat else "output_tokens"))
        total = _num(u.get("total_tokens"))
    # xAI counts reasoning outside completion_tokens but inside its total: what the total
    # holds beyond input and output is output the provider did not label.
    output = min(output + max(total - prompt - output, 0), FIGURE_CAP)
    usage.input_tokens, usage.cache_read_tokens = prompt - cached, cached
    usage.output_tokens, usage.cache_write_tokens = output, 0
    return True


def _kind(item: object) -> object:
    return item.get("type") if isinstance(item, dict) else None


def usage_key(wire: Wire) -> str:
    return "usageMetadata" if wire is Wire.GEMINI else "usage"


def model_key(wire: Wire) -> str:
    return "modelVersion" if wire is Wire.GEMINI else "model"


def apply_usage(wire: Wire, usage: Usage, obj: Any) -> None:
    """Reads the usage and model of a decoded answer, or of one event of a streamed one."""
    key = usage_key(wire)
    if isinstance(obj, list) and wire is Wire.GEMINI:  # streamGenerateContent without alt=sse
        last = [o for o in obj if isinstance(o, dict) and isinstance(o.get(key), dict)]
        obj = last[-1] if last else None
    if not isinstance(obj, dict):
        return
    if wire is Wire.ANTHROPIC and obj.get("type") == "message_start":
        obj = obj.get("message")
    elif wire is Wire.OPENAI_RESPONSES and isinstance(obj.get("response"), dict):
        obj = obj["response"]
    if not isinstance(obj, dict):
        return
    if isinstance(found := obj.get(key), dict):
        fill_usage(wire, usage, found)
    if wire is Wire.OPENAI_RESPONSES and isinstance(output := obj.get("output"), list):
        searches = sum(1 for item in output if _kind(item) == "web_search_call")
        if searches:  # each web_search_call is a search the provider bills
            usage.tool_uses["web_search"] = searches
    if model := text_of(obj.get(model_key(wire))):
        usage.model = model
