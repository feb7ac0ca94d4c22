"""A work queue of keys, the way Kubernetes controllers use one.

- Adding a key that is already queued does nothing: duplicates coalesce.
- A key is handed to one worker at a time; added again while being worked on, it is queued
  again once that worker is done, so no change is ever missed.
- ``add(key, delay)`` queues it later (a backoff, a deadline); timers are kept in one heap,
  at most one per key (the earliest): a level-driven sync sets the next one itself.

Workers block in :meth:`get` until a key is due; :meth:`get_nowait` serves tests that run
the queue by hand with a manual clock (``tests/doubles/clock.py``).
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

from clawhq.controller.clock import Clock

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._queue: deque[K] = deque()
        self._queued: set[K] = set()
        self._processing: set[K] = set()
        self._dirty: set[K] = set()
        self._timers: list[tuple[float, int, K]] = []
        self._due: dict[K, float] = {}  # each key's earliest timer: later ones are dropped
        self._order = itertools.count()
        self._closed = False

    def add(self, key: K, delay: float = 0.0) -> None:
        with self._cond:
            if self._closed:
                return
            if delay > 0:
                due = self._clock.monotonic() + delay
                earliest = self._due.get(key)
                if earliest is not None and earliest <= due:
                    return  # it is looked at sooner anyway; that sync decides what follows
                self._due[key] = due
                heapq.heappush(self._timers, (due, next(self._order), key))
            else:
                self._add_now(key)
            self._cond.notify()

    def _add_now(self, key: K) -> None:
        if key in self._processing:
            self._dirty.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.append(key)

    def _release_due(self) -> float | None:
        """Move due timers to the queue; seconds until the next one (None without)."""
        now = self._clock.monotonic()
        while self._timers and self._timers[0][0] <= now:
            due, _, key = heapq.heappop(self._timers)
            if self._due.get(key) != due:
                continue  # replaced by an earlier timer, which has fired already
            del self._due[key]
            self._add_now(key)
        return self._timers[0][0] - now if self._timers else None

    def _take(self) -> K:
        key = self._queue.popleft()
        self._queued.discard(key)
        self._processing.add(key)
        return key

    def get(self, timeout: float | None = None) -> K | None:
        """The next due key (the caller must call :meth:`done`), or None on timeout or close."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._closed:
                next_due = self._release_due()
                if self._queue:
                    return self._take()
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                waits = [w for w in (next_due, remaining) if w is not None]
                self._cond.wait(min(waits) if waits else None)
            return None

    def get_nowait(self) -> K | None:
        with self._cond:
            self._release_due()
            return self._take() if self._queue else None

    def done(self, key: K) -> None:
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty:
                self._dirty.discard(key)
                self._add_now(key)
                self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def pending(self) -> int:
        """Keys queued now (not counting timers or keys being worked on)."""
        with self._cond:
            return len(self._queue)

    def busy(self) -> bool:
        """Whether anything is queued, being worked on, or due on a timer already."""
        with self._cond:
            self._release_due()
            return bool(self._queue or self._processing)
