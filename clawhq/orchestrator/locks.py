"""Per-agent locks: operations on one agent run one at a time within this process."""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Iterator


class _Lock:
    __slots__ = ("__weakref__", "rlock")

    def __init__(self) -> None:
        self.rlock = threading.RLock()


class AgentLocks:
    """One re-entrant lock per agent id, dropped once nobody holds a reference to it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: weakref.WeakValueDictionary[str, _Lock] = weakref.WeakValueDictionary()

    @contextlib.contextmanager
    def hold(self, agent_id: str) -> Iterator[None]:
        with self._guard:
            lock = self._locks.get(agent_id)
            if lock is None:
                lock = _Lock()
                self._locks[agent_id] = lock
        with lock.rlock:
            yield
