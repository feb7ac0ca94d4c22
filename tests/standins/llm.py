"""A stand-in for the LLM providers ClawHQ's gateway forwards to: Anthropic, OpenAI (Chat
Completions and Responses), Google Gemini, DeepSeek and xAI, each on its own path prefix and in
its own wire format, streamed or not, with known usage. It records every call (the key it came
with included) and answers deterministically, so tests can compare bytes and exact token totals.

``with LLMStandIn() as llm:`` serves on an ephemeral port in a thread; point
``CLAWHQ_LLM_UPSTREAM_<PROVIDER>`` at ``llm.upstream(provider)``.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit

CREATED = 1_700_000_000  # every id and timestamp is fixed: the same request, the same bytes
WORDS = ("Hello", " from", " the", " stand", "-in", ".")

ANTHROPIC_USAGE = {
    "input_tokens": 25,
    "cache_creation_input_tokens": 3,
    "cache_read_input_tokens": 7,
    "output_tokens": 42,
}
OPENAI_CHAT_USAGE = {
    "prompt_tokens": 31,
    "completion_tokens": 12,
    "total_tokens": 43,
    "prompt_tokens_details": {"cached_tokens": 8},
}
OPENAI_RESPONSES_USAGE = {
    "input_tokens": 19,
    "output_tokens": 23,
    "total_tokens": 42,
    "input_tokens_details": {"cached_tokens": 4},
    "output_tokens_details": {"reasoning_tokens": 5},
}
GEMINI_USAGE = {
    "promptTokenCount": 17,
    "candidatesTokenCount": 9,
    "thoughtsTokenCount": 2,
    "cachedContentTokenCount": 5,
    "totalTokenCount": 28,
}
DEEPSEEK_USAGE = {  # DeepSeek's extra cache fields next to OpenAI's
    "prompt_tokens": 27,
    "completion_tokens": 14,
    "total_tokens": 41,
    "prompt_tokens_details": {"cached_tokens": 6},
    "prompt_cache_hit_tokens": 6,
    "prompt_cache_miss_tokens": 21,
}
XAI_USAGE = {  # as xAI counts: reasoning is outside completion_tokens but inside the total
    "prompt_tokens": 33,
    "completion_tokens": 16,
    "total_tokens": 55,
    "prompt_tokens_details": {"text_tokens": 33, "cached_tokens": 10},
    "completion_tokens_details": {"reasoning_tokens": 6},
}
XAI_RESPONSES_USAGE = {
    "input_tokens": 21,
    "output_tokens": 13,
    "total_tokens": 34,
    "input_tokens_details": {"cached_tokens": 2},
    "output_tokens_details": {"reasoning_tokens": 3},
}
USAGE: dict[str, dict[str, Any]] = {
    "anthropic": ANTHROPIC_USAGE,
    "openai_chat": OPENAI_CHAT_USAGE,
    "openai_responses": OPENAI_RESPONSES_USAGE,
    "gemini": GEMINI_USAGE,
    "deepseek": DEEPSEEK_USAGE,
    "xai": XAI_USAGE,
    "xai_responses": XAI_RESPONSES_USAGE,
}
TOTALS: dict[str, int] = {
    "anthropic": 77,  # 25 + 3 + 7 + 42: Anthropic's input_tokens leave the cache out
    "openai_chat": 43,
    "openai_responses": 42,
    "gemini": 28,  # 17 + 9 + 2: the cached 5 are part of the prompt's 17
    "deepseek": 41,
    "xai": 55,  # 33 + 16 + 6
    "xai_responses": 34,
}
# The same numbers normalised: input includes cached and cache writes, output includes
# reasoning, so input + output == total for every format.
NORMALISED: dict[str, dict[str, int]] = {
    "anthropic": {"input": 35, "cached": 7, "cache_write": 3, "output": 42, "reasoning": 0},
    "openai_chat": {"input": 31, "cached": 8, "cache_write": 0, "output": 12, "reasoning": 0},
    "openai_responses": {"input": 19, "cached": 4, "cache_write": 0, "output": 23, "reasoning": 5},
    "gemini": {"input": 17, "cached": 5, "cache_write": 0, "output": 11, "reasoning": 2},
    "deepseek": {"input": 27, "cached": 6, "cache_write": 0, "output": 14, "reasoning": 0},
    "xai": {"input": 33, "cached": 10, "cache_write": 0, "output": 22, "reasoning": 6},
    "xai_responses": {"input": 21, "cached": 2, "cache_write": 0, "output": 13, "reasoning": 3},
}

# (provider, path) -> (kind of endpoint, usage format); Gemini's paths are matched apart
ROUTES = {
    ("anthropic", "/v1/messages"): ("messages", "anthropic"),
    ("openai", "/v1/chat/completions"): ("chat", "openai_chat"),
    ("deepseek", "/chat/completions"): ("chat", "deepseek"),
    ("deepseek", "/v1/chat/completions"): ("chat", "deepseek"),
    ("xai", "/v1/chat/completions"): ("chat", "xai"),
    ("openai", "/v1/responses"): ("responses", "openai_responses"),
    ("xai", "/v1/responses"): ("responses", "xai_responses"),
}
GEMINI_PATH = re.compile(r"^/v1beta/models/([^/:]+):(generateContent|streamGenerateContent)$")
_OPENAI_MODELS = {"object": "list", "data": [{"id": "standin-1", "object": "model"}]}
MODEL_LISTS: dict[tuple[str, str], Any] = {  # unmetered
    ("anthropic", "/v1/models"): {
        "data": [{"type": "model", "id": "standin-1"}],
        "has_more": False,
    },
    ("google", "/v1beta/models"): {"models": [{"name": "models/standin-1"}]},
    ("openai", "/v1/models"): _OPENAI_MODELS,
    ("deepseek", "/models"): _OPENAI_MODELS,
    ("deepseek", "/v1/models"): _OPENAI_MODELS,
    ("xai", "/v1/models"): _OPENAI_MODELS,
}


def route(provider: str, path: str) -> tuple[str, str] | None:
    """``(kind, usage format)`` of a metered endpoint (a key of ``USAGE``), None for others."""
    if provider == "google" and GEMINI_PATH.match(path):
        return "gemini", "gemini"
    return ROUTES.get((provider, path))


def pieces(n: int) -> list[str]:
    """The text deltas of a streamed answer (at least one); joined, the non-streamed text."""
    return [WORDS[i % len(WORDS)] for i in range(max(n, 1))]


def compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def parse_sse(raw: bytes) -> list[tuple[str | None, Any]]:
    """``(event name or None, parsed data)`` for each event; ``[DONE]`` stays a string."""
    events: list[tuple[str | None, Any]] = []
    for block in re.split(r"\r\n\r\n|\n\n|\r\r", raw.decode()):
        name, data = None, []
        for line in block.splitlines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
        if data:
            text = "\n".join(data)
            events.append((name, text if text == "[DONE]" else json.loads(text)))
    return events


@dataclass
class Call:
    provider: str  # the path prefix: "anthropic" | "openai" | "google" | "deepseek" | "xai"
    path: str  # after the prefix, without the query: "/v1/messages"
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    key: str | None  # from x-api-key, Authorization: Bearer, x-goog-api-key or ?key=, first found
    body: Any  # parsed JSON, None without a body
    streamed: bool
    method: str = "POST"
    key_from: str | None = None  # "x-api-key" | "authorization" | "x-goog-api-key" | "query"
    status: int = 0
    answer: bytes = b""  # the body as written (without the chunked framing), so far
    completed: bool = False  # True once all was written; False mid-stream or if the client left


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    standin: LLMStandIn


class LLMStandIn:
    """The providers, on ``(host, port)``; ``with LLMStandIn(host) as llm:`` serves in a thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self.url = ""
        self.calls: list[Call] = []
        self.stream_delay = 0.0  # seconds between streamed content events
        self.stream_chunks = 3  # content deltas in a streamed answer
        self.last_body = b""  # the body of the last answer, as written so far
        self._failures: list[tuple[int, bytes, str]] = []
        self._active = 0
        self._lock = threading.Condition()
        self._server: _Server | None = None

    def upstream(self, provider: str) -> str:
        return f"{self.url}/{provider}"

    def fail_next(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        """The next call, whatever it asks, answers this (queued: call it twice, two calls fail)."""
        with self._lock:
            self._failures.append((status, body, content_type))

    def expected(self, provider: str, path: str, streamed: bool = False) -> dict[str, Any]:
        """What a call to ``path`` costs: ``format``, the provider's ``usage`` as sent, ``total``
        and the ``NORMALISED`` fields. The same streamed or not (a streamed chat completion carries
        its usage only when asked with ``stream_options.include_usage``)."""
        found = route(provider, urlsplit(path).path)
        if found is None:
            raise ValueError(f"{provider} {path} is not metered")
        fmt = found[1]
        usage = copy.deepcopy(USAGE[fmt])
        return {"format": fmt, "usage": usage, "total": TOTALS[fmt], **NORMALISED[fmt]}

    def finished(self, timeout: float) -> bool:
        """Wait until no answer is being written; False if one still is after ``timeout``."""
        with self._lock:
            return self._lock.wait_for(lambda: self._active == 0, timeout)

    def _bind(self) -> _Server:
        server = _Server((self.host, self.port), _Handler)
        server.standin = self
        self._server = server
        self.url = f"http://{self.host}:{server.server_address[1]}"
        return server

    def __enter__(self) -> LLMStandIn:
        server = self._bind()  # a short poll: leaving the block costs ~10 ms, not 250
        threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    def serve_forever(self) -> None:
        self._bind().serve_forever()


def _error(provider: str, status: int, message: str) -> dict[str, Any]:
    """An error body as the provider writes it."""
    if provider == "anthropic":
        kind = {401: "authentication_error", 404: "not_found_error"}.get(status)
        return {
            "type": "error",
            "error": {"type": kind or "invalid_request_error", "message": message},
        }
    if provider == "google":
        state = {401: "UNAUTHENTICATED", 404: "NOT_FOUND"}.get(status, "INVALID_ARGUMENT")
        return {"error": {"code": status, "message": message, "status": state}}
    code = "invalid_api_key" if status == 401 else None
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    return {"error": error}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, and chunked streams written by hand
    timeout = 30

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _read_body(self) -> bytes:
        if "chunked" not in self.headers.get("transfer-encoding", "").lower():
            return self.rfile.read(int(self.headers.get("content-length") or 0))
        data = bytearray()
        while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
            data += self.rfile.read(size)
            self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass  # trailers
        return bytes(data)

    def _handle(self) -> None:
        standin = cast(_Server, self.server).standin
        url = urlsplit(self.path)
        provider, _, path = url.path.removeprefix("/").partition("/")
        path = "/" + path
        query = dict(parse_qsl(url.query))
        headers = {k.lower(): v for k, v in self.headers.items()}
        raw = self._read_body()
        try:
            body, bad = (json.loads(raw) if raw.strip() else None), False
        except ValueError:
            body, bad = None, True
        key, key_from = _key(headers, query)
        found = route(provider, path) if self.command == "POST" else None
        models = self.command == "GET" and (provider, path) in MODEL_LISTS
        gemini = GEMINI_PATH.match(path) if found and found[0] == "gemini" else None
        if gemini:
            streamed = gemini[2] == "streamGenerateContent"
        else:
            streamed = bool(found) and isinstance(body, dict) and body.get("stream") is True
        call = Call(provider, path, query, headers, key, body, streamed, self.command, key_from)
        with standin._lock:
            standin.calls.append(call)
            standin._active += 1
            failure = standin._failures.pop(0) if standin._failures else None
        try:
            if failure:
                self._reply(call, *failure)
            elif not found and not models:
                message = f"Invalid URL ({self.command} {url.path})"
                self._json(call, 404, _error(provider, 404, message))
            elif key is None:
                self._json(call, 401, _error(provider, 401, "No API key was provided."))
            elif models:
                self._json(call, 200, MODEL_LISTS[(provider, path)])
            elif bad or not isinstance(body, dict):
                self._json(call, 400, _error(provider, 400, "The body is not a JSON object."))
            else:
                assert found
                kind, fmt = found
                model = gemini[1] if gemini else str(body.get("model"))
                answer = _Answer(USAGE[fmt], model, pieces(standin.stream_chunks))
                self._answer(call, answer, kind)
        finally:
            with standin._lock:
                standin._active -= 1
                standin._lock.notify_all()

    def _json(self, call: Call, status: int, obj: Any, indent: int | None = None) -> None:
        self._reply(call, status, json.dumps(obj, indent=indent).encode())

    def _reply(self, call: Call, status: int, data: bytes, ctype: str = "application/json") -> None:
        self._send(call, status, ctype, [data], {"content-length": str(len(data))})

    def _send(
        self, call: Call, status: int, ctype: str, events: Iterable[bytes | None], headers: Any
    ) -> None:
        """Write the answer; the call records it *before* each write, so a client that has read
        something finds it recorded (and a write that fails takes ``completed`` back)."""
        standin, chunked = cast(_Server, self.server).standin, "content-length" not in headers
        call.status = status
        try:
            self.send_response(status)
            for name, value in {"content-type": ctype, **headers}.items():
                self.send_header(name, value)
            self.end_headers()
            call.completed = not chunked  # its one write may be read before write() returns
            for data in events:
                if data is None:
                    time.sleep(standin.stream_delay)
                    continue
                call.answer = standin.last_body = call.answer + data
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
            if chunked:
                call.completed = True
                self.wfile.write(b"0\r\n\r\n")
        except OSError:  # the client left: stop quietly, the call says it was cut
            call.completed = False
            self.close_connection = True

    def _answer(self, call: Call, answer: _Answer, kind: str) -> None:
        if not call.streamed:
            whole = {"messages": answer.message, "chat": answer.completion}
            obj = {**whole, "responses": answer.response, "gemini": answer.gemini}[kind]()
            return self._json(call, 200, obj, indent=2 if kind == "gemini" else None)
        events, ctype = answer.stream(kind, call.body, call.query.get("alt") == "sse")
        chunks = (None if event is None else event.encode() for event in events)
        streaming = {"cache-control": "no-cache", "transfer-encoding": "chunked"}
        self._send(call, 200, ctype, chunks, streaming)


def _key(headers: dict[str, str], query: dict[str, str]) -> tuple[str | None, str | None]:
    bearer = headers.get("authorization", "")
    bearer = bearer[7:].strip() if bearer.lower().startswith("bearer ") else ""
    for value, where in (
        (headers.get("x-api-key"), "x-api-key"),
        (bearer, "authorization"),
        (headers.get("x-goog-api-key"), "x-goog-api-key"),
        (query.get("key"), "query"),
    ):
        if value:
            return value, where
    return None, None


@dataclass
class _Answer:
    """One answer in every format; ``*_stream`` yield events, and None where to pause."""

    usage: dict[str, Any]
    model: str
    parts: list[str]

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def stream(self, kind: str, body: Any, sse: bool) -> tuple[Iterator[str | None], str]:
        """The events of a streamed answer, and their content type."""
        if kind == "chat":
            include = (body.get("stream_options") or {}).get("include_usage") is True
            return self.chat_stream(include), "text/event-stream"
        if kind == "gemini" and not sse:
            return self.gemini_array(), "application/json"
        other = {"messages": self.message_stream, "responses": self.response_stream}
        return {**other, "gemini": self.gemini_sse}[kind](), "text/event-stream"

    def _deltas(self, event: Callable[[int, str], str]) -> Iterator[str | None]:
        for i, part in enumerate(self.parts):
            if i:
                yield None
            yield event(i, part)

    # Anthropic Messages
    def message(self, content: list[Any] | None = None, usage: Any = None) -> dict[str, Any]:
        return {
            "id": "msg_standin01",
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [{"type": "text", "text": self.text}] if content is None else content,
            "stop_reason": "end_turn" if usage is None else None,
            "stop_sequence": None,
            "usage": usage or self.usage,
        }

    def message_stream(self) -> Iterator[str | None]:
        def sse(obj: dict[str, Any]) -> str:
            return f"event: {obj['type']}\ndata: {compact(obj)}\n\n"

        start = {**self.usage, "output_tokens": 1}
        yield sse({"type": "message_start", "message": self.message([], start)})
        block = {"type": "text", "text": ""}
        yield sse({"type": "content_block_start", "index": 0, "content_block": block})
        yield sse({"type": "ping"})

        def delta(_: int, text: str) -> str:
            block = {"type": "text_delta", "text": text}
            return sse({"type": "content_block_delta", "index": 0, "delta": block})

        yield from self._deltas(delta)
        yield sse({"type": "content_block_stop", "index": 0})
        # "One or more message_delta events": the usage is cumulative, the last one counts.
        none = {"stop_reason": None, "stop_sequence": None}
        yield sse({"type": "message_delta", "delta": none, "usage": {"output_tokens": 20}})
        end = {"stop_reason": "end_turn", "stop_sequence": None}
        yield sse({"type": "message_delta", "delta": end, "usage": self.usage})
        yield sse({"type": "message_stop"})

    # OpenAI-style Chat Completions (OpenAI, DeepSeek, xAI)
    def _chat(self, obj: str) -> dict[str, Any]:
        return {
            "id": "chatcmpl-standin",
            "object": obj,
            "created": CREATED,
            "model": self.model,
            "system_fingerprint": "fp_standin",
        }

    def completion(self) -> dict[str, Any]:
        message = {"role": "assistant", "content": self.text, "refusal": None}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
        return {**self._chat("chat.completion"), "choices": [choice], "usage": self.usage}

    def chat_stream(self, include_usage: bool) -> Iterator[str | None]:
        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            extra = {"usage": None} if include_usage else {}
            return f"data: {compact({**self._chat(base), 'choices': [choice], **extra})}\n\n"

        base = "chat.completion.chunk"
        yield chunk({"role": "assistant", "content": "", "refusal": None})
        yield from self._deltas(lambda _, part: chunk({"content": part}))
        yield chunk({}, "stop")
        if include_usage:
            last = {**self._chat(base), "choices": [], "usage": self.usage}
            yield f"data: {compact(last)}\n\n"
        yield "data: [DONE]\n\n"

    # OpenAI-style Responses (OpenAI, xAI)
    def _item(self, done: bool) -> dict[str, Any]:
        content = [{"type": "output_text", "annotations": [], "text": self.text}] if done else []
        return {
            "id": "msg_standin01",
            "type": "message",
            "role": "assistant",
            "status": "completed" if done else "in_progress",
            "content": content,
        }

    def response(self, done: bool = True) -> dict[str, Any]:
        return {
            "id": "resp_standin01",
            "object": "response",
            "created_at": CREATED,
            "status": "completed" if done else "in_progress",
            "error": None,
            "incomplete_details": None,
            "model": self.model,
            "output": [self._item(True)] if done else [],
            "usage": self.usage if done else None,
        }

    def response_stream(self) -> Iterator[str | None]:
        sequence = iter(range(1 << 30))
        at = {"item_id": "msg_standin01", "output_index": 0, "content_index": 0}

        def sse(kind: str, **fields: Any) -> str:
            obj = {"type": kind, "sequence_number": next(sequence), **fields}
            return f"event: {kind}\ndata: {compact(obj)}\n\n"

        yield sse("response.created", response=self.response(False))
        yield sse("response.in_progress", response=self.response(False))
        yield sse("response.output_item.added", output_index=0, item=self._item(False))
        part = {"type": "output_text", "annotations": [], "text": ""}
        yield sse("response.content_part.added", **at, part=part)
        yield from self._deltas(lambda _, p: sse("response.output_text.delta", **at, delta=p))
        yield sse("response.output_text.done", **at, text=self.text)
        yield sse("response.content_part.done", **at, part={**part, "text": self.text})
        yield sse("response.output_item.done", output_index=0, item=self._item(True))
        yield sse("response.completed", response=self.response())

    # Gemini
    def gemini(self, i: int | None = None) -> dict[str, Any]:
        """The whole answer, or the ``i``-th streamed chunk (usage cumulative, the last whole)."""
        last = i is None or i == len(self.parts) - 1
        usage = dict(self.usage)
        if i is not None and not last:
            out = usage["candidatesTokenCount"] * (i + 1) // len(self.parts)
            usage["candidatesTokenCount"] = out
            usage["totalTokenCount"] = usage["promptTokenCount"] + out + usage["thoughtsTokenCount"]
        text = self.text if i is None else self.parts[i]
        candidate = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
        if last:
            candidate["finishReason"] = "STOP"
        return {
            "candidates": [candidate],
            "usageMetadata": usage,
            "modelVersion": self.model,
            "responseId": "standin01",
        }

    def gemini_sse(self) -> Iterator[str | None]:
        """``?alt=sse``: compact JSON events, ended CRLF CRLF as Google does."""
        return self._deltas(lambda i, _: f"data: {compact(self.gemini(i))}\r\n\r\n")

    def gemini_array(self) -> Iterator[str | None]:
        """No ``alt``: one JSON array of pretty-printed chunks, written piece by piece."""
        yield from self._deltas(
            lambda i, _: ("[" if i == 0 else "\n,\r\n") + json.dumps(self.gemini(i), indent=2)
        )
        yield "]"


if __name__ == "__main__":  # python -m tests.standins.llm HOST PORT
    import sys

    LLMStandIn(sys.argv[1], int(sys.argv[2])).serve_forever()
