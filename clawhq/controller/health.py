"""HTTP probe of an agent's health path: only a JSON body saying ``ok`` counts as healthy.

What an agent answers is input: a probe reads at most :data:`MAX_BODY_BYTES` and gives up at
:data:`DEADLINE_SECONDS` however the agent drips its answer, so a hostile agent can neither
hold a probe worker nor grow ClawHQ's memory.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import httpx

Probe = Callable[[str], bool]

#: The most of a health answer ever read; ``{"ok": true}`` needs a dozen bytes.
MAX_BODY_BYTES = 4096
#: How long one probe may take in all (each read waits at most READ_TIMEOUT besides).
DEADLINE_SECONDS = 3.0
READ_TIMEOUT = 1.0

# One client for every probe: building an httpx client loads a TLS context, which cost more
# CPU than the probe itself (the supervision benchmark's main finding). Probes are plain HTTP
# to loopback; connections are not kept, so a restarted agent never meets a stale one.
_client = httpx.Client(
    timeout=httpx.Timeout(READ_TIMEOUT, connect=2.0),
    limits=httpx.Limits(max_connections=64, max_keepalive_connections=0),
    trust_env=False,
)


def http_probe(url: str) -> bool:
    """True when ``url`` answers 200 with a JSON object whose ``ok`` is true.

    OpenClaw's Control UI answers unknown paths with a catch-all 200 page, so the status code
    alone proves nothing.
    """
    deadline = time.monotonic() + DEADLINE_SECONDS
    try:
        with _client.stream("GET", url) as response:
            if response.status_code != 200:
                return False
            body = bytearray()
            for chunk in response.iter_raw():
                body += chunk
                if len(body) > MAX_BODY_BYTES or time.monotonic() > deadline:
                    return False
            answer = json.loads(bytes(body))
        return isinstance(answer, dict) and answer.get("ok") is True
    except (httpx.HTTPError, ValueError):
        return False
