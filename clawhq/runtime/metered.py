"""A :class:`~clawhq.runtime.base.Runtime` that counts the containers it creates and removes.

Every method is written out: a wrapper forwarding through ``__getattr__`` is not an instance of
a ``runtime_checkable`` protocol on Python 3.12+ (``isinstance`` no longer consults it), and
``clawhq serve`` then took the engine for one that cannot report its networks.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from clawhq.observability.metrics import Metrics
from clawhq.runtime.base import (
    Container,
    ContainerSpec,
    ContainerStats,
    DiskUsage,
    EngineEvent,
    LogLine,
    Runtime,
    Volume,
)
from clawhq.runtime.security import ContainerSecurity, DaemonFacts, NetworkFacts


class MeteredRuntime:
    """Delegates everything to ``inner``; ``create`` and ``remove`` also update counters."""

    def __init__(self, inner: Runtime, metrics: Metrics) -> None:
        self.inner = inner
        self._metrics = metrics

    # -- AgentRuntime ---------------------------------------------------------------------------

    def create(self, spec: ContainerSpec) -> Container:
        container = self.inner.create(spec)
        self._metrics.containers_created.inc()
        return container

    def put_file(
        self, container_id: str, path: str, content: bytes, *, owner: str, mode: int = 0o400
    ) -> None:
        self.inner.put_file(container_id, path, content, owner=owner, mode=mode)

    def start(self, container_id: str) -> None:
        self.inner.start(container_id)

    def stop(self, container_id: str, timeout: int) -> None:
        self.inner.stop(container_id, timeout)

    def remove(self, container_id: str) -> bool:
        removed = self.inner.remove(container_id)
        if removed:
            self._metrics.containers_removed.inc()
        return removed

    def inspect(self, container_id: str) -> Container | None:
        return self.inner.inspect(container_id)

    def list_managed(self, filters: Mapping[str, str] | None = None) -> list[Container]:
        return self.inner.list_managed(filters)

    def events(self, since: datetime | None = None) -> Iterator[EngineEvent]:
        return self.inner.events(since)

    def ping(self) -> None:
        self.inner.ping()

    def close(self) -> None:
        self.inner.close()

    # -- ContainerTelemetry ---------------------------------------------------------------------

    def logs(self, container_id: str, tail: int) -> str:
        return self.inner.logs(container_id, tail)

    def log_lines(
        self, container_id: str, *, tail: int, since: datetime | None = None
    ) -> list[LogLine]:
        return self.inner.log_lines(container_id, tail=tail, since=since)

    def stats(self, container_id: str, *, quick: bool = False) -> ContainerStats:
        return self.inner.stats(container_id, quick=quick)

    # -- VolumeStore ----------------------------------------------------------------------------

    def remove_volume(self, name: str) -> None:
        self.inner.remove_volume(name)

    def list_volumes(self) -> list[Volume]:
        return self.inner.list_volumes()

    def disk_support(self) -> str | None:
        return self.inner.disk_support()

    def disk_usage(self, name: str) -> DiskUsage | None:
        return self.inner.disk_usage(name)

    # -- WorkspaceArchives -----------------------------------------------------------------------

    def export_volume(self, name: str, image: str, path: str) -> Iterator[bytes]:
        return self.inner.export_volume(name, image, path)

    def import_volume(self, spec: ContainerSpec, archive: Iterable[bytes]) -> None:
        self.inner.import_volume(spec, archive)

    # -- EngineAdmin ----------------------------------------------------------------------------

    def ensure_network(self, name: str) -> str:
        return self.inner.ensure_network(name)

    def image_exists(self, image: str) -> bool:
        return self.inner.image_exists(image)

    def image_id(self, image: str) -> str | None:
        return self.inner.image_id(image)

    def build_image(
        self, context: Path, dockerfile: str, tag: str, buildargs: Mapping[str, str] | None = None
    ) -> str:
        return self.inner.build_image(context, dockerfile, tag, buildargs)

    # -- SecurityInspector ----------------------------------------------------------------------

    def security_facts(self, container_id: str) -> ContainerSecurity | None:
        return self.inner.security_facts(container_id)

    def network_facts(self, name: str) -> NetworkFacts | None:
        return self.inner.network_facts(name)

    def daemon_facts(self) -> DaemonFacts:
        return self.inner.daemon_facts()


if TYPE_CHECKING:  # mypy checks here that the wrapper is a whole Runtime
    _: type[Runtime] = MeteredRuntime
