"""Per-key request budgets (token buckets), kept in this process's memory.

Login and register are limited per client address (:mod:`clawhq.clients`), failed logins per
account as well, everything authenticated per user. With several ClawHQ processes each keeps
its own budgets, so the effective limit multiplies.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from clawhq.errors import TooManyRequests
from clawhq.settings import Settings

#: Keys kept at most. Past it, full budgets are forgotten (nothing is lost), then the least
#: recently used go until a tenth is free: memory stays bounded however many keys are sprayed
#: (a forgotten key starts afresh), and the scan runs once per many new keys, not every one.
MAX_KEYS = 100_000


class RateLimiter:
    """``limit`` requests per ``window`` seconds per key, refilled continuously."""

    def __init__(
        self,
        limit: int,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = MAX_KEYS,
    ) -> None:
        self.limit = limit
        self.rate = limit / window
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def _tokens(self, key: str, now: float) -> float:
        tokens, last = self._buckets.pop(key, (float(self.limit), now))
        return min(float(self.limit), tokens + (now - last) * self.rate)

    def retry_after(self, key: str) -> float:
        """Spend one request of ``key``'s budget: 0 if allowed, else seconds until allowed."""
        now = self._clock()
        with self._lock:
            tokens = self._tokens(key, now)  # taken out: put back last, as the most recent
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                if len(self._buckets) > self.max_keys:
                    self._shrink(now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.rate

    def refund(self, key: str) -> None:
        """Give back one request of ``key``'s budget (one spent on something that turned out
        not to count, such as a login that succeeded); never beyond the limit."""
        now = self._clock()
        with self._lock:
            if key in self._buckets:
                self._buckets[key] = (min(float(self.limit), self._tokens(key, now) + 1), now)

    def check(self, key: str, what: str) -> None:
        wait = self.retry_after(key)
        if wait > 0:
            raise TooManyRequests(
                f"too many {what}; retry in {math.ceil(wait)} s",
                code="rate_limited",
                retry_after=math.ceil(wait),
            )

    def __len__(self) -> int:
        return len(self._buckets)

    def _shrink(self, now: float) -> None:
        full = [
            k
            for k, (t, last) in self._buckets.items()
            if t + (now - last) * self.rate >= self.limit
        ]
        for key in full:
            del self._buckets[key]
        keep = self.max_keys - self.max_keys // 10
        if len(self._buckets) > keep:
            for key in list(self._buckets)[: len(self._buckets) - keep]:  # oldest use first
                del self._buckets[key]


@dataclass(frozen=True)
class Limits:
    """The API's request budgets, one limiter each (``CLAWHQ_RATE_LIMIT_*``)."""

    auth: RateLimiter
    user: RateLimiter
    webhook: RateLimiter
    register: RateLimiter
    login_account: RateLimiter

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(
            auth=RateLimiter(settings.rate_limit_auth),
            user=RateLimiter(settings.rate_limit_user),
            webhook=RateLimiter(settings.rate_limit_webhook),
            register=RateLimiter(settings.rate_limit_register, window=3600.0),
            login_account=RateLimiter(settings.rate_limit_login_account, window=3600.0),
        )
