"""Where a browser may be sent after signing in: a path on ClawHQ's own origin, judged the way
a browser will read it (the WHATWG URL parser), not the way the string looks.

A browser drops tabs and newlines anywhere in a URL, trims leading and trailing control
characters and spaces, and reads ``\\`` as ``/`` in http(s) URLs: so ``/\\t/evil.example``,
``/\\evil.example`` and `` //evil.example`` all leave the origin although each starts with one
slash, and ``https:evil.example`` names another host without any.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

_DROPPED = re.compile(r"[\t\n\r]")
_TRIMMED = "".join(chr(c) for c in range(0x21))  # C0 controls and space


def browser_reading(value: str) -> str:
    """``value`` as a browser parses a URL out of it: tabs and newlines gone, controls and
    spaces trimmed, backslashes as slashes."""
    return _DROPPED.sub("", value).strip(_TRIMMED).replace("\\", "/")


def local_path(value: str | None, default: str = "/") -> str:
    """``value`` when a browser would read it as a path on this origin (and nothing else),
    else ``default``; the answer is what the browser will read, so it is what is sent."""
    if not value:
        return default
    read = browser_reading(value)
    parts = urlsplit(read)
    if parts.scheme or parts.netloc or not read.startswith("/") or read.startswith("//"):
        return default
    return read
