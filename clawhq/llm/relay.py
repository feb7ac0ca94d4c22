"""A model call on its way through the gateway: the request as the provider gets it, and the
answer streamed back chunk by chunk while its usage is read from it.

What reaches the provider is an allowlist: the headers and query parameters its API reads to
serve a call, never the agent's token, a cookie, ClawHQ's own headers, or one that routes or
bills the call elsewhere (``OpenAI-Organization``, ``OpenAI-Project``, ``x-goog-user-project``,
Google's ``fields`` that would cut the usage out of the answer…); the real key is added here.
``anthropic-beta`` keeps only the betas that add no provider-side tool, storage or billing path
(those that do pass for agents whose egress is ``open`` only when the body policy lets their
tool through, see ``policy``). Answers come back unbuffered. An agent that hangs up mid-answer
does not stop the metering: the provider's answer is read to its end (the provider bills it
anyway), so the call is charged for everything it produced.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass

import httpx
from starlette.types import Message, Receive, Send

from clawhq.llm.metering import Meter, Usage, Wire
from clawhq.proxy.http import StreamedResponse

log = logging.getLogger(__name__)

#: Request headers passed on as they are: what the providers' APIs read to serve a call.
#: ``x-stainless-*`` and ``x-goog-api-client`` only name the SDK and its retry count.
_PASSED = frozenset(
    {"accept", "content-type", "user-agent", "anthropic-version", "x-goog-api-client"}
)
_PASSED_PREFIXES = ("x-stainless-",)
#: Query parameters passed on: Gemini's ``alt=sse``, the Anthropic SDK's ``beta=true``, the
#: listings' paging. Google's system parameters (``fields``, ``userProject``, ``quotaUser``…)
#: and the agent's token in ``key`` are not.
_QUERY = frozenset({"alt", "beta", "pageSize", "pageToken", "limit", "after_id", "before_id"})
#: ``anthropic-beta`` families (the name before its ``-YYYY-MM-DD``) passed for every agent:
#: output, thinking, caching, context and streaming features of a model call. Unknown ones are
#: dropped: a beta may add a provider-side tool, storage, or a path billed apart.
PLAIN_BETAS = frozenset(
    {
        "compact",
        "computer-use",  # the computer tool runs in the agent's own container
        "context-1m",
        "context-management",
        "dev-full-thinking",
        "effort",
        "extended-cache-ttl",
        "fast-mode",
        "fine-grained-tool-streaming",
        "interleaved-thinking",
        "max-tokens-3-5-sonnet",
        "model-context-window-exceeded",
        "output-128k",
        "output-300k",
        "pdfs",
        "prompt-caching",
        "structured-outputs",
        "token-counting",
        "token-efficient-tools",
        "tools",
    }
)
#: Betas that enable a provider-side tool the body policy allows to agents whose egress is
#: ``open`` (it still refuses the tool itself for the others).
OPEN_BETAS = frozenset({"mcp-client", "web-fetch"})
_BETA = re.compile(r"([a-z0-9-]+?)-\d{4}-\d{2}-\d{2}")


def passed_betas(value: str, *, egress_open: bool) -> str:
    """The ``anthropic-beta`` value as it goes on: the betas ClawHQ lets through, in order."""
    kept = []
    for beta in value.split(","):
        beta = beta.strip().lower()
        family = _BETA.fullmatch(beta)
        name = family.group(1) if family else ""
        if name in PLAIN_BETAS or (egress_open and name in OPEN_BETAS):
            kept.append(beta)
    return ",".join(dict.fromkeys(kept))


def upstream_headers(
    incoming: Iterable[tuple[str, str]],
    key_headers: list[tuple[str, str]],
    *,
    egress_open: bool = False,
) -> list[tuple[str, str]]:
    """The agent's request headers as the provider gets them, with the real key."""
    out = []
    for name, value in incoming:
        lower = name.lower()
        if lower == "anthropic-beta":
            value = passed_betas(value, egress_open=egress_open)
            if value:
                out.append((name, value))
        elif lower in _PASSED or lower.startswith(_PASSED_PREFIXES):
            out.append((name, value))
    return [*out, *key_headers, ("accept-encoding", "identity")]


def upstream_query(incoming: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The query parameters the provider gets: the allowlisted ones, never ``key``."""
    return [(name, value) for name, value in incoming if name in _QUERY]


class PassThrough(Meter):
    """For the calls that cost nothing: the answer as it is, nothing read from it."""

    def __init__(self) -> None:
        super().__init__(Wire.OPENAI_CHAT)

    def feed(self, chunk: bytes) -> bytes:
        return chunk

    def close(self) -> bytes:
        return b""


@dataclass
class Ending:
    """How a relayed answer ended: what the meter read, the status, and the outcome."""

    usage: Usage
    status: int
    outcome: str  # ok, error, client_gone, broken
    latency_ms: int


class MeteredResponse(StreamedResponse):
    """Relays an open provider response through a meter; ``on_end`` runs however it ends."""

    def __init__(
        self,
        response: httpx.Response,
        meter: Meter,
        *,
        started: float,
        idle_seconds: float,
        rewrites: bool,
        on_end: Callable[[Ending], None],
    ) -> None:
        """``rewrites``: the meter changes the body (its length header is dropped)."""
        super().__init__(response, idle_seconds, self._ended)
        self._meter, self._started, self._on_end, self.rewrites = meter, started, on_end, rewrites
        self._outcome = "ok" if response.status_code < 400 else "error"

    async def relay(self, receive: Receive, send: Send, start: Message) -> None:
        meter, gone = self._meter, asyncio.Event()
        watcher = asyncio.create_task(_watch_disconnect(receive, gone))
        try:
            await self._send(send, gone, start)
            await _Pump(meter, send, gone, self._idle).run(self._response.aiter_raw())
            await self._send(send, gone, _body(meter.close(), more=False))
        except (httpx.HTTPError, OSError) as exc:
            log.info("model answer ended early: %s", type(exc).__name__)
            meter.close()
            self._outcome = "broken"
        finally:
            watcher.cancel()
            if gone.is_set() and self._outcome == "ok":
                self._outcome = "client_gone"

    def _ended(self) -> None:
        latency = int((time.monotonic() - self._started) * 1000)
        self._on_end(Ending(self._meter.usage, self.status_code, self._outcome, latency))

    async def _send(self, send: Send, gone: asyncio.Event, message: Message) -> None:
        """Send to the agent unless it hung up. One that does not read for the idle time, or
        whose connection fails, is taken for gone: the answer is still read to its end."""
        if gone.is_set():
            return
        try:
            async with asyncio.timeout(self._idle):
                await send(message)
        except (TimeoutError, OSError):
            gone.set()


class _Pump:
    """Reads the provider's answer through the meter while the agent's side is written.

    What arrives while a write is under way goes out with the next one: a fast stream costs
    a write per burst, not a write per chunk (a write per chunk held a 5,000-chunk stream to a
    fifth of its speed, bench/RESULTS.md). At most ``HELD`` bytes wait; the provider is then read
    no further until they are taken. An agent that takes nothing for the idle time, or hangs
    up, is gone: the rest is read for the meter only.
    """

    HELD = 1 << 20

    def __init__(self, meter: Meter, send: Send, gone: asyncio.Event, idle: float) -> None:
        self._meter, self._send, self._gone, self._idle = meter, send, gone, idle
        self._held = bytearray()
        self._ready = asyncio.Event()  # something to write, or the end
        self._room = asyncio.Event()  # held bytes under HELD
        self._room.set()
        self._ended = False

    async def run(self, chunks: AsyncIterator[bytes]) -> None:
        reader = asyncio.create_task(self._read(chunks))
        try:
            await self._write()
            await reader  # its errors (a provider that broke off) are the caller's
        finally:
            reader.cancel()

    async def _read(self, chunks: AsyncIterator[bytes]) -> None:
        try:
            async for chunk in chunks:  # the client's read timeout: a provider gone quiet
                out = self._meter.feed(chunk)
                if not out or self._gone.is_set():
                    continue
                self._held += out
                self._ready.set()
                if len(self._held) >= self.HELD:
                    self._room.clear()
                    await self._room.wait()
        finally:
            self._ended = True
            self._ready.set()

    async def _write(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            if self._held and not self._gone.is_set():
                data = bytes(self._held)
                self._held.clear()
                self._room.set()
                try:
                    async with asyncio.timeout(self._idle):
                        await self._send(_body(data, more=True))
                except (TimeoutError, OSError):
                    self._gone.set()
            if self._gone.is_set():
                self._held.clear()
                self._room.set()
            if self._ended and not self._held:
                return


def _body(data: bytes, *, more: bool) -> Message:
    return {"type": "http.response.body", "body": data, "more_body": more}


async def _watch_disconnect(receive: Receive, gone: asyncio.Event) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            gone.set()
            return
