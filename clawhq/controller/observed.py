"""Observed state: what the engine last said about each agent's containers, in one cache.

The controller writes it (from full listings, from each agent's sync, from engine events);
the API reads it, so answering ``GET /api/agents/{id}`` never costs an engine call. While the
engine cannot be reached the cache says so (``fresh`` is False) and the API answers
``containerStatus: unknown`` rather than something stale.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable

from clawhq.runtime import Container

UNKNOWN = "unknown"
MISSING = "missing"


class ObservedState:
    """Containers by agent id, and the image id each image reference resolves to."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_agent: dict[str, tuple[Container, ...]] = {}
        self._images: dict[str, str] = {}
        self._fresh = False

    @property
    def fresh(self) -> bool:
        """Whether the cache follows the engine (the last listing or event stream worked)."""
        return self._fresh

    def replace_all(self, containers: Iterable[Container]) -> None:
        """A full listing: it replaces everything known."""
        grouped: dict[str, list[Container]] = defaultdict(list)
        for container in containers:
            grouped[container.agent_id or ""].append(container)
        with self._lock:
            self._by_agent = {k: tuple(v) for k, v in grouped.items()}
            self._fresh = True

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
        self._fresh = False

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
