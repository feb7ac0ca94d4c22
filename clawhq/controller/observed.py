"""Observed state: what the engine last said about each agent's containers, in one cache.

The controller writes it (from full listings, from each agent's sync, from engine events);
the API reads it, so answering ``GET /api/agents/{id}`` never costs an engine call. While the
engine cannot be reached the cache says so (``fresh`` is False) and the API answers
``containerStatus: unknown`` rather than something stale.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable

from clawhq.runtime import Container, Runtime, labels

UNKNOWN = "unknown"
MISSING = "missing"
#: How long after the engine came back its errors count as its own, not an agent's: a dockerd
#: that answers may still be loading its volumes and networks (seen: "inspect volume …: get …"
#: for a workspace that exists, a few seconds after a restart).
ENGINE_SETTLE_SECONDS = 30.0


class ObservedState:
    """Containers by agent id, and the image id each image reference resolves to."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._recovered_at: float | None = None
        self._lock = threading.Lock()
        self._by_agent: dict[str, tuple[Container, ...]] = {}
        self._images: dict[str, str] = {}
        self._fresh = False
        self._epoch = 0
        self._noted: dict[str, set[str]] = {}

    @property
    def fresh(self) -> bool:
        """Whether the cache follows the engine (the last listing or event stream worked)."""
        return self._fresh

    @property
    def epoch(self) -> int:
        """Counts the engine's disappearances: take it before a listing, hand it to
        :meth:`replace_all`, and a listing begun before the engine went is not trusted."""
        return self._epoch

    def replace_all(self, containers: Iterable[Container], epoch: int | None = None) -> bool:
        """A full listing: it replaces everything known, and the cache is fresh again unless
        the engine was lost since ``epoch`` (then it stays stale). True when fresh."""
        grouped: dict[str, list[Container]] = defaultdict(list)
        for container in containers:
            grouped[container.agent_id or ""].append(container)
        with self._lock:
            self._by_agent = {k: tuple(v) for k, v in grouped.items()}
            was_fresh = self._fresh
            self._fresh = epoch is None or epoch == self._epoch
            if self._fresh and not was_fresh and self._epoch:
                self._recovered_at = self._monotonic()
            return self._fresh

    def engine_settling(self) -> bool:
        """Whether the engine is away, or came back less than ``ENGINE_SETTLE_SECONDS`` ago
        (after having been lost): its errors then are the engine's, not the agents'."""
        if self._epoch == 0:
            return False  # never lost since this process started
        if not self._fresh:
            return True
        recovered = self._recovered_at
        return recovered is not None and self._monotonic() - recovered < ENGINE_SETTLE_SECONDS

    def replace_agent(self, agent_id: str, containers: Iterable[Container]) -> None:
        found = tuple(containers)
        with self._lock:
            if found:
                self._by_agent[agent_id] = found
            else:
                self._by_agent.pop(agent_id, None)

    def forget(self, agent_id: str) -> None:
        with self._lock:
            self._by_agent.pop(agent_id, None)

    def set_images(self, resolved: dict[str, str]) -> None:
        with self._lock:
            self._images = dict(resolved)

    def image_id(self, image: str) -> str:
        """The id ``image`` resolved to at the last look ("" when not known)."""
        return self._images.get(image, "")

    def lost(self) -> None:
        """The engine stopped answering: what is cached may be stale."""
        with self._lock:
            self._fresh = False
            self._epoch += 1

    def note(self, agent_id: str, container_id: str) -> None:
        """An engine event named this container: the next sync of the agent inspects it.

        The engine's list endpoint answers from a view that it updates after the event (a
        container listed as ``running`` right after its ``die`` event, measured on Docker
        20.10), while inspecting waits for the container's own state."""
        with self._lock:
            self._noted.setdefault(agent_id, set()).add(container_id)

    def take_noted(self, agent_id: str) -> set[str]:
        with self._lock:
            return self._noted.pop(agent_id, set())

    def containers(self, agent_id: str) -> tuple[Container, ...]:
        with self._lock:
            return self._by_agent.get(agent_id, ())

    def all(self) -> list[Container]:
        with self._lock:
            return [c for found in self._by_agent.values() for c in found]

    def container(self, agent_id: str, container_id: str | None) -> Container | None:
        """The agent's recorded container, if the engine has it."""
        if container_id is None:
            return None
        return next((c for c in self.containers(agent_id) if c.id == container_id), None)

    def state(self, agent_id: str, container_id: str | None) -> str:
        """``running``, ``exited``… of the agent's container; ``missing``; ``unknown``."""
        if not self._fresh:
            return UNKNOWN
        if container_id is None:
            return MISSING
        found = self.container(agent_id, container_id)
        return found.state.value if found else MISSING


def observe_agent(
    runtime: Runtime, observed: ObservedState, agent_id: str, noted: set[str] | None = None
) -> list[Container]:
    """The agent's containers as the engine has them now: listed, and those an event named
    (``noted``, else those noted since the last look: :meth:`ObservedState.note`) inspected.
    If the engine fails, the noted ones stay noted for the next look."""
    if noted is None:
        noted = observed.take_noted(agent_id)
    try:
        found = runtime.list_managed({labels.AGENT_ID: agent_id})
        current = []
        for container in found:
            if container.id in noted:
                inspected = runtime.inspect(container.id)
                if inspected is None:
                    continue  # removed since the listing
                container = inspected
            current.append(container)
        return current
    except Exception:
        for container_id in noted:
            observed.note(agent_id, container_id)
        raise
