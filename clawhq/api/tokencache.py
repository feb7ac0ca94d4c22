"""A short-lived memory of which user a bearer token belongs to.

Authentication was the largest part of a request's database work (the API benchmark). A
token is looked up again after ``ttl`` seconds, so a plan or admin change reaches a busy
token within that time; expiry is checked on every request from the remembered time.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

from clawhq.db.models import User

MAX_ENTRIES = 10_000


class TokenCache:
    def __init__(self, ttl: float = 5.0) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[User, datetime | None, float]] = {}
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
        with self._lock:
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[token_hash] = (user, expires_at, time.monotonic())
