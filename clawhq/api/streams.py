"""Long-lived responses (Server-Sent Events) are a resource like any other: each takes a
slot, per user and in total, and lives at most ``CLAWHQ_STREAM_MAX_SECONDS``.

One user within the request rate limit could otherwise hold a thousand ``logs?follow=true``
streams, each polling the engine, and exhaust the server's file descriptors for everyone.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable

from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from clawhq.errors import TooManyRequests

SSE = "text/event-stream"


class StreamSlots:
    """Counted slots for long-lived connections, per user and in total."""

    def __init__(
        self,
        per_user: int,
        total: int,
        *,
        noun: str = "streams",
        setting: str = "CLAWHQ_STREAMS_PER_USER",
        code: str = "too_many_streams",
    ) -> None:
        self.per_user = per_user
        self.total = total
        self._noun, self._setting, self._code = noun, setting, code
        self._lock = threading.Lock()
        self._by_user: dict[str, int] = {}
        self._open = 0

    def acquire(self, user_id: str) -> Callable[[], None]:
        """Take a slot for ``user_id`` (429 with the slots' code when none is left); returns
        the function that gives it back (idempotent)."""
        with self._lock:
            mine = self._by_user.get(user_id, 0)
            if mine >= self.per_user:
                raise TooManyRequests(
                    f"you already have {mine} open {self._noun} ({self._setting}="
                    f"{self.per_user}); close one first",
                    code=self._code,
                    retry_after=5,
                )
            if self._open >= self.total:
                raise TooManyRequests(
                    f"the server has as many open {self._noun} as it takes; retry soon",
                    code=self._code,
                    retry_after=5,
                )
            self._by_user[user_id] = mine + 1
            self._open += 1
        released = threading.Event()

        def release() -> None:
            if released.is_set():
                return
            released.set()
            with self._lock:
                self._open -= 1
                left = self._by_user.get(user_id, 1) - 1
                if left:
                    self._by_user[user_id] = left
                else:
                    self._by_user.pop(user_id, None)

        return release

    def open(self, user_id: str | None = None) -> int:
        with self._lock:
            return self._by_user.get(user_id, 0) if user_id else self._open


def stream_response(
    slots: StreamSlots, lifetime: float, user_id: str, make: Callable[[float], AsyncIterator[str]]
) -> StreamingResponse:
    """An SSE response holding one of ``user_id``'s ``slots``; ``make(lifetime)`` builds the
    stream, which must end within that many seconds of its start."""
    release = slots.acquire(user_id)
    return StreamingResponse(
        holding(release, make(lifetime)),
        media_type=SSE,
        background=BackgroundTask(release),  # also when the body never began
    )


async def holding(release: Callable[[], None], stream: AsyncIterator[str]) -> AsyncIterator[str]:
    """``stream``, giving its slot back however it ends (done, failed, client gone)."""
    try:
        async for chunk in stream:
            yield chunk
    finally:
        release()
