"""A short-lived memory of which user a bearer token belongs to.

Authentication was the largest part of a request's database work (the API benchmark). A
token is looked up again after ``ttl`` seconds, so a plan or admin change reaches a busy
token within that time; expiry is checked on every request from the remembered time.

A token revoked through this process is evicted at once, and for ``ttl`` seconds afterwards a
lookup that read its row before the revocation cannot put it back. Other processes keep their
own caches: there a revoked token may still be accepted for up to ``ttl`` seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime

from clawhq.db.models import User

MAX_ENTRIES = 10_000


class TokenCache:
    def __init__(self, ttl: float = 5.0) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[User, datetime | None, float]] = {}
        self._revoked: dict[str, float] = {}
        self._lock = threading.Lock()

    def get(self, token_hash: str) -> User | None:
        with self._lock:
            entry = self._entries.get(token_hash)
        if entry is None:
            return None
        user, expires_at, stored = entry
        if time.monotonic() - stored > self.ttl or (
            expires_at is not None and expires_at <= datetime.now(UTC)
        ):
            with self._lock:
                self._entries.pop(token_hash, None)
            return None
        return user

    def put(self, token_hash: str, user: User, expires_at: datetime | None) -> None:
        now = time.monotonic()
        with self._lock:
            revoked = self._revoked.get(token_hash)
            if revoked is not None and now - revoked <= self.ttl:
                return
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[token_hash] = (user, expires_at, now)

    def evict(self, token_hashes: Iterable[str]) -> None:
        """Forget revoked tokens now, and refuse to remember them again for ``ttl`` seconds."""
        now = time.monotonic()
        with self._lock:
            self._revoked = {h: t for h, t in self._revoked.items() if now - t <= self.ttl}
            for token_hash in token_hashes:
                self._entries.pop(token_hash, None)
                if len(self._revoked) < MAX_ENTRIES:
                    self._revoked[token_hash] = now
