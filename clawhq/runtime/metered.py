"""A :class:`~clawhq.runtime.base.Runtime` that counts the containers it creates and removes."""

from __future__ import annotations

from typing import Any

from clawhq.observability.metrics import Metrics
from clawhq.runtime.base import Container, ContainerSpec, Runtime


class MeteredRuntime:
    """Delegates everything to ``inner``; ``create`` and ``remove`` also update counters."""

    def __init__(self, inner: Runtime, metrics: Metrics) -> None:
        self.inner = inner
        self._metrics = metrics

    def create(self, spec: ContainerSpec) -> Container:
        container = self.inner.create(spec)
        self._metrics.containers_created.inc()
        return container

    def remove(self, container_id: str) -> bool:
        removed = self.inner.remove(container_id)
        if removed:
            self._metrics.containers_removed.inc()
        return removed

    def claim(self, instance_id: str) -> None:
        self.inner.claim(instance_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
