"""HTTP probe of an agent's health path: only a JSON body saying ``ok`` counts as healthy."""

from __future__ import annotations

from collections.abc import Callable

import httpx

Probe = Callable[[str], bool]


def http_probe(url: str, timeout: float = 2.0) -> bool:
    """True when ``url`` answers 200 with a JSON object whose ``ok`` is true.

    OpenClaw's Control UI answers unknown paths with a catch-all 200 page, so the status code
    alone proves nothing.
    """
    try:
        response = httpx.get(url, timeout=timeout)
        return response.status_code == 200 and response.json().get("ok") is True
    except (httpx.HTTPError, ValueError, AttributeError):
        return False
