"""Token metering read from the provider's own answer, as it streams through the gateway.

Pure: bytes in, bytes out, no I/O. A ``Meter`` relays the answer chunk by chunk (unchanged,
unless it strips usage the client did not ask for) and reads the usage on the side. The answer
is untrusted: nothing here raises on it, memory stays bounded, and only the few events that
carry usage are JSON-decoded.
"""

from __future__ import annotations

import json
import posixpath
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
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


def _loads(data: bytes | bytearray) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None


def _text(value: object) -> str | None:
    return value[:MODEL_CHARS] if isinstance(value, str) and value else None


def model_of_request(wire: Wire, body: bytes, path: str) -> str | None:
    """The model asked for: the JSON body's "model", or Gemini's ``models/<model>:`` segment."""
    if wire is Wire.GEMINI:
        match = _GEMINI_MODEL.search(_normal_path(path))
        if match:
            return match.group(1)[:MODEL_CHARS]
    obj = _loads(body)
    return _text(obj.get("model")) if isinstance(obj, dict) else None


def with_usage_requested(wire: Wire, body: bytes) -> tuple[bytes, bool]:
    """A streamed Chat Completions body made to ask for usage, and whether it was changed.

    True means the client did not ask for it: strip the usage from the answer again
    (``meter_for(..., strip_usage=True)``). Any other body comes back unchanged, with False.
    """
    if wire is not Wire.OPENAI_CHAT:
        return body, False
    obj = _loads(body)
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


def _fill(wire: Wire, usage: Usage, u: dict[str, Any]) -> bool:
    """Sets ``usage`` from a provider's usage object (Anthropic's: field by field)."""
    if all(u.get(key) is None for key in _FIGURES[wire]):
        return False
    usage.seen = True
    if wire is Wire.ANTHROPIC:
        for key, attr in _ANTHROPIC_FIELDS:
            if u.get(key) is not None:  # present in a later message_delta: replaces
                setattr(usage, attr, _num(u[key]))
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


def _usage_key(wire: Wire) -> str:
    return "usageMetadata" if wire is Wire.GEMINI else "usage"


def _model_key(wire: Wire) -> str:
    return "modelVersion" if wire is Wire.GEMINI else "model"


def _apply(wire: Wire, usage: Usage, obj: Any) -> None:
    """Reads the usage and model of a decoded answer, or of one event of a streamed one."""
    key = _usage_key(wire)
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
        _fill(wire, usage, found)
    if model := _text(obj.get(_model_key(wire))):
        usage.model = model


# -- meters --------------------------------------------------------------------------------


class Meter(ABC):
    """Relays one upstream answer chunk by chunk and reads its usage on the side."""

    def __init__(self, wire: Wire) -> None:
        self.wire = wire
        self.usage = Usage()

    @abstractmethod
    def feed(self, chunk: bytes) -> bytes:
        """Bytes to send on to the client for this upstream chunk."""

    @abstractmethod
    def close(self) -> bytes:
        """At the end of the upstream body: whatever is still held back; usage is final."""


#: A blank line: a line ending, then an empty line. ``\r`` only ends a line alone when no
#: ``\n`` follows, so ``\r\n`` is never read as two endings.
_BOUNDARY = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r(?!\n)|\n)")
_NULL_USAGE = re.compile(rb'"usage"[ \t]*:[ \t]*null(?=[ \t]*[,}])')
_NULL_MEMBERS = (
    re.compile(rb',[ \t]*"usage"[ \t]*:[ \t]*null(?=[ \t]*[,}])'),
    re.compile(rb'"usage"[ \t]*:[ \t]*null[ \t]*,[ \t]*'),
)


def _data(event: bytes) -> bytes:
    """The data of one SSE event: its ``data:`` lines joined with ``\\n``."""
    parts = []
    for line in event.splitlines():
        if line.startswith(b"data:"):
            parts.append(line[6:] if line[5:6] == b" " else line[5:])
        elif line == b"data":
            parts.append(b"")
    return b"\n".join(parts)


def _without_null_usage(event: bytes) -> bytes:
    for member in _NULL_MEMBERS:
        edited, count = member.subn(b"", event, count=1)
        if count:
            return edited
    return event


_COLON = re.compile(r"\s*:\s*")
_DECODER = json.JSONDecoder()


def _value(text: str, at: int) -> Any:
    """The JSON value after the key that ends at ``at``, or None."""
    colon = _COLON.match(text, at)
    if colon is None:
        return None
    try:
        return _DECODER.raw_decode(text, colon.end())[0]
    except (ValueError, RecursionError):
        return None


def _usage_in_tail(wire: Wire, usage: Usage, tail: bytes | bytearray) -> bool:
    """Reads the last usage object in the last TAIL_KEEP bytes of something too big to parse."""
    text, key = tail[-TAIL_KEEP:].decode(errors="replace"), f'"{_usage_key(wire)}"'
    end = len(text)
    for _ in range(4):  # the last usage key counts; a few earlier ones when it is no object
        end = text.rfind(key, 0, end)
        if end < 0:
            return False
        if isinstance(found := _value(text, end + len(key)), dict):
            return _fill(wire, usage, found)
    return False


class _SseMeter(Meter):
    """text/event-stream: split into events; only those with the marker are looked at."""

    def __init__(self, wire: Wire, strip: bool) -> None:
        super().__init__(wire)
        self._strip = strip and wire is Wire.OPENAI_CHAT
        self._marker = f'"{_usage_key(wire)}"'.encode()
        self._buf = bytearray()  # the event not yet ended (of an over-cap one: its last bytes)
        self._scan = 0  # where the search for the next blank line resumes
        self._skipped: bytearray | None = None  # the tail of the over-cap event under way
        self._last: bytes | None = None  # the last event with usage, where the last counts
        self._broken = False

    def feed(self, chunk: bytes) -> bytes:
        """Bytes to send on to the client for this upstream chunk."""
        if self._broken:
            return chunk
        try:
            out = self._take(chunk)
        except Exception:  # never break the client's stream: relay the rest as it is
            self._broken = True
            held = bytes(self._buf) if self._strip else chunk
            self._buf.clear()
            return held
        return out if self._strip else chunk

    def _take(self, chunk: bytes) -> bytes:
        buf = self._buf
        buf += chunk
        out: list[bytes] = []
        pos, scan = 0, self._scan
        lf = cr = len(buf)  # the next \n\n and the next \r from scan on (-1: none left)
        while True:
            lf = buf.find(b"\n\n", scan) if 0 <= lf < scan or lf == len(buf) else lf
            cr = buf.find(b"\r", scan) if 0 <= cr < scan or cr == len(buf) else cr
            if cr < 0 or 0 <= lf < cr:  # framed with \n alone: no regex needed
                if lf < 0:
                    break
                end = lf + 2
            else:
                found = _BOUNDARY.search(buf, max(scan, cr - 1))
                if found is None:
                    break
                end = found.end()
                if end == len(buf) and buf[-1] == 0x0D:  # the \r may yet be half of a \r\n
                    break
            if self._skipped is not None:
                self._over_cap(self._skipped + buf[pos:end])
                self._skipped, edited = None, None
            else:
                edited = self._event(buf, pos, end)
            if self._strip:
                out.append(bytes(buf[pos:end]) if edited is None else edited)
            pos = scan = end
        if self._skipped is not None or len(buf) - pos > EVENT_CAP:
            keep = max(len(buf) - 3, pos)  # enough to find the blank line that ends it
            if self._strip:
                out.append(bytes(buf[pos:keep]))
            skipped = self._skipped if self._skipped is not None else bytearray()
            skipped += buf[max(keep - TAIL_KEEP, pos) : keep]
            if len(skipped) > 2 * TAIL_KEEP:
                del skipped[:-TAIL_KEEP]
            self._skipped, pos = skipped, keep
        del buf[:pos]
        self._scan = max(len(buf) - 3, 0)
        return b"".join(out)

    def _over_cap(self, tail: bytes | bytearray) -> None:
        """An event too big to parse: only a usage object in its tail is read."""
        if _usage_in_tail(self.wire, self.usage, tail):
            self._last = None  # read here, and later than any candidate held

    def _event(self, buf: bytes | bytearray, start: int, end: int) -> bytes | None:
        """Reads one whole event; returns what replaces it when stripping, None: unchanged."""
        if buf.find(self._marker, start, end) < 0:
            return None
        if end - start > EVENT_CAP:
            self._over_cap(buf[max(end - TAIL_KEEP, start) : end])
            return None
        if self.wire is Wire.ANTHROPIC:  # field by field: every event with usage counts
            _apply(self.wire, self.usage, _loads(_data(bytes(buf[start:end]))))
            return None
        if (
            self.wire is not Wire.GEMINI
            and buf.count(b'"usage"', start, end) == 1
            and _NULL_USAGE.search(buf, start, end)
        ):
            return _without_null_usage(bytes(buf[start:end])) if self._strip else None
        event = bytes(buf[start:end])
        self._last = event  # the last one counts: decoded once, at close()
        if self._strip:
            obj = _loads(_data(event))
            if isinstance(obj, dict) and obj.get("choices") == [] and obj.get("usage") is not None:
                return b""  # the usage-only chunk the client did not ask for
        return None

    def close(self) -> bytes:
        """At the end of the upstream body: whatever is still held back; usage is final."""
        rest = bytes(self._buf)
        self._buf.clear()
        try:
            if self._skipped is not None:
                self._over_cap(self._skipped + rest)
            elif rest and not self._broken:
                edited = self._event(rest, 0, len(rest))  # an event cut short is still read
                rest = rest if edited is None else edited
            if self._last is not None:
                _apply(self.wire, self.usage, _loads(_data(self._last)))
                self._last = None
        except Exception:  # a usage that cannot be read is a usage not seen, never an error
            self._broken = True
        return rest if self._strip else b""


class _BodyMeter(Meter):
    """A whole body: parsed at the end, or when too large, its last usage found in its tail."""

    def __init__(self, wire: Wire) -> None:
        super().__init__(wire)
        self._buf = bytearray()
        self._whole = True  # not over BODY_CAP: all of it is kept

    def feed(self, chunk: bytes) -> bytes:
        """Bytes to send on to the client for this upstream chunk: the chunk itself."""
        self._buf += chunk
        if len(self._buf) > (BODY_CAP if self._whole else 2 * TAIL_KEEP):
            del self._buf[:-TAIL_KEEP]
            self._whole = False
        return chunk

    def close(self) -> bytes:
        """Reads the usage of the body; nothing is held back."""
        if self._whole:
            _apply(self.wire, self.usage, _loads(self._buf))
        elif _usage_in_tail(self.wire, self.usage, self._buf):
            tail, key = self._buf.decode(errors="replace"), f'"{_model_key(self.wire)}"'
            if (at := tail.rfind(key)) >= 0 and (model := _text(_value(tail, at + len(key)))):
                self.usage.model = model  # Gemini's ends each chunk; others are at the start
        self._buf.clear()
        return b""


def meter_for(wire: Wire, content_type: str, *, strip_usage: bool = False) -> Meter:
    """A meter for an upstream answer of this content type.

    text/event-stream is read as SSE; anything else as one whole body (a JSON object, or
    Gemini's JSON array of chunks). ``strip_usage`` (Chat Completions SSE only) removes the
    usage that ``with_usage_requested`` asked for.
    """
    if content_type.split(";", 1)[0].strip().lower() == "text/event-stream":
        return _SseMeter(wire, strip_usage)
    return _BodyMeter(wire)
