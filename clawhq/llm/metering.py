"""Token metering read from the provider's own answer, as it streams through the gateway.

Pure: bytes in, bytes out, no I/O. A ``Meter`` relays the answer chunk by chunk (unchanged,
unless it strips usage the client did not ask for) and reads the usage on the side. The answer
is untrusted: nothing here raises on it, memory stays bounded, and only the few events that
carry usage are JSON-decoded. Which path speaks which format, and where each keeps its usage,
is in ``wires``.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from typing import Any

from clawhq.llm.wires import (
    BODY_CAP,
    EVENT_CAP,
    TAIL_KEEP,
    Usage,
    Wire,
    apply_usage,
    fill_usage,
    loads,
    model_key,
    model_of_request,
    text_of,
    usage_key,
    wire_for,
    with_usage_requested,
)

__all__ = [
    "Meter",
    "Usage",
    "Wire",
    "meter_for",
    "model_of_request",
    "wire_for",
    "with_usage_requested",
]


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
    text, key = tail[-TAIL_KEEP:].decode(errors="replace"), f'"{usage_key(wire)}"'
    end = len(text)
    for _ in range(4):  # the last usage key counts; a few earlier ones when it is no object
        end = text.rfind(key, 0, end)
        if end < 0:
            return False
        if isinstance(found := _value(text, end + len(key)), dict):
            return fill_usage(wire, usage, found)
    return False


class _SseMeter(Meter):
    """text/event-stream: split into events; only those with the marker are looked at."""

    def __init__(self, wire: Wire, strip: bool) -> None:
        super().__init__(wire)
        self._strip = strip and wire is Wire.OPENAI_CHAT
        self._marker = f'"{usage_key(wire)}"'.encode()
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
            apply_usage(self.wire, self.usage, loads(_data(bytes(buf[start:end]))))
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
            obj = loads(_data(event))
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
                apply_usage(self.wire, self.usage, loads(_data(self._last)))
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
            apply_usage(self.wire, self.usage, loads(self._buf))
        elif _usage_in_tail(self.wire, self.usage, self._buf):
            tail, key = self._buf.decode(errors="replace"), f'"{model_key(self.wire)}"'
            if (at := tail.rfind(key)) >= 0 and (model := text_of(_value(tail, at + len(key)))):
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
