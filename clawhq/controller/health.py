"""HTTP probe of an agent's health path: only a JSON body saying ``ok`` counts as healthy."""

from __future__ import annotations

from collections.abc import Callable

import httpx

Probe = Callable[[str], bool]

# One client for every probe: building an httpx client loads a TLS context, which cost more
# CPU than the probe itself (the supervision benchmark's main finding). Probes are plain HTTP
# to loopback; connections are not kept, so a restarted agent never meets a stale one.
_client = httpx.Client(
    timeout=2.0,
    limits=httpx.Limits(max_connections=64, max_keepalive_connections=0),
    trust_env=False,
)


def http_probe(url: str) -> bool:
    """True when ``url`` answers 200 with a JSON object whose ``ok`` is true.

    OpenClaw's Control UI answers unknown paths with a catch-all 200 page, so the status code
    alone proves nothing.
    """
    try:
        response = _client.get(url)
        return response.status_code == 200 and response.json().get("ok") is True
    except (httpx.HTTPError, ValueError, AttributeError):
        return False
