"""Per-key request budgets (token buckets), kept in this process's memory.

Login and register are limited per client address, everything authenticated per user. With
several ClawHQ processes each keeps its own budgets, so the effective limit multiplies.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from clawhq.errors import TooManyRequests

MAX_KEYS = 100_000


class RateLimiter:
    """``limit`` requests per ``window`` seconds per key, refilled continuously."""

    def __init__(
        self, limit: int, window: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.rate = limit / window
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, key: str) -> float:
        """Spend one request of ``key``'s budget: 0 if allowed, else seconds until allowed."""
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.limit), now))
            tokens = min(float(self.limit), tokens + (now - last) * self.rate)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                if len(self._buckets) > MAX_KEYS:
                    self._forget_full(now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.rate

    def check(self, key: str, what: str) -> None:
        wait = self.retry_after(key)
        if wait > 0:
            raise TooManyRequests(
                f"too many {what}; retry in {math.ceil(wait)} s",
                code="rate_limited",
                retry_after=math.ceil(wait),
            )

    def _forget_full(self, now: float) -> None:
        full = [
            k
            for k, (t, last) in self._buckets.items()
            if t + (now - last) * self.rate >= self.limit
        ]
        for key in full:
            del self._buckets[key]
