"""An in-memory runtime for unit tests of the layers above.

It implements every role of :class:`~clawhq.runtime.base.Runtime` but the security facts
(:class:`~clawhq.runtime.security.SecurityInspector`): an in-memory engine has no hardening to
report.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from clawhq.errors import ClawHQError, EngineError, EngineUnavailable, ImageNotFound
from clawhq.runtime import labels
from clawhq.runtime.base import (
    Container,
    ContainerSpec,
    ContainerState,
    ContainerStats,
    EngineEvent,
    LogLine,
    Volume,
)

if TYPE_CHECKING:
    from clawhq.runtime.base import AgentRuntime, ContainerTelemetry, EngineAdmin, VolumeStore


class FakeRuntime:
    """Containers as dicts. ``fail[method] = error`` makes the next calls of ``method`` raise;
    ``reachable = False`` makes every call raise ``EngineUnavailable``.

    ``images`` are the tags that exist; ``image_ids[tag]`` is a tag's image id (by default
    ``sha256:`` and the tag's SHA-256, and a new one at each ``build_image``).
    """

    def __init__(self, images: set[str] | None = None, *, instance_id: str | None = None) -> None:
        self.images = set(images or ())
        self.image_ids: dict[str, str] = {}
        self.instance_id = instance_id
        self.containers: dict[str, Container] = {}
        self.specs: dict[str, ContainerSpec] = {}
        self.volumes: set[str] = set()
        self.volume_labels: dict[str, dict[str, str]] = {}
        self.fail: dict[str, ClawHQError] = {}
        self.written_logs: dict[str, list[str]] = {}
        self.reachable = True
        self._ids = itertools.count(1)
        self._builds = itertools.count(1)
        self._lock = threading.Lock()

    def _check(self, method: str) -> None:
        if not self.reachable:
            raise EngineUnavailable("fake engine is down")
        if method in self.fail:
            raise self.fail[method]

    def _find(self, ref: str) -> Container | None:
        return self.containers.get(ref) or next(
            (c for c in self.containers.values() if c.name == ref), None
        )

    def _in_scope(self, found: Mapping[str, str]) -> bool:
        """What DockerRuntime's label filter keeps: agents, of this installation if given."""
        return found.get(labels.SERVICE) == labels.SERVICE_AGENT and (
            self.instance_id is None or found.get(labels.INSTANCE) == self.instance_id
        )

    def close(self) -> None:
        """Nothing to release."""

    def ping(self) -> None:
        self._check("ping")

    def ensure_network(self, name: str) -> str:
        self._check("ensure_network")
        return "10.99.0.1"

    def create(self, spec: ContainerSpec) -> Container:
        self._check("create")
        with self._lock:
            if spec.image not in self.images:
                raise ImageNotFound(f"no such image: {spec.image}")
            if self._find(spec.name):
                raise EngineError(f"container name {spec.name} is already in use")
            container = Container(
                id=f"fake{next(self._ids):060d}",
                name=spec.name,
                image=spec.image,
                state=ContainerState.CREATED,
                labels={**spec.labels, labels.CONFIG_HASH: spec.config_hash()},
                ports=(spec.port,),
                image_id=self._image_id(spec.image),
            )
            self.containers[container.id] = container
            self.specs[container.id] = spec
            self.volumes.add(spec.volume)
            self.volume_labels[spec.volume] = spec.volume_labels()
            return container

    def _set(self, ref: str, **changes: object) -> None:
        with self._lock:
            container = self._find(ref)
            if container is None:
                raise EngineError(f"no such container: {ref}")
            self.containers[container.id] = replace(container, **changes)  # type: ignore[arg-type]

    def start(self, container_id: str) -> None:
        self._check("start")
        self._set(container_id, state=ContainerState.RUNNING, started_at=datetime.now(UTC))

    def stop(self, container_id: str, timeout: int) -> None:
        self._check("stop")
        if self._find(container_id):
            self._set(container_id, state=ContainerState.EXITED, exit_code=0)

    def crash(self, container_id: str, exit_code: int = 137, oom: bool = False) -> None:
        """Test helper: the container dies on its own."""
        self._set(container_id, state=ContainerState.EXITED, exit_code=exit_code, oom_killed=oom)

    def remove(self, container_id: str) -> bool:
        self._check("remove")
        with self._lock:
            container = self._find(container_id)
            if container is None:
                return False
            del self.containers[container.id]
            self.specs.pop(container.id, None)
            return True

    def remove_volume(self, name: str) -> None:
        self._check("remove_volume")
        self.volumes.discard(name)
        self.volume_labels.pop(name, None)

    def list_volumes(self) -> list[Volume]:
        self._check("list_volumes")
        return [
            Volume(name, found.get(labels.VOLUME_OF, ""), found.get(labels.USER_ID, ""))
            for name, found in list(self.volume_labels.items())
            if self._in_scope(found)
        ]

    def inspect(self, container_id: str) -> Container | None:
        self._check("inspect")
        return self._find(container_id)

    def list_managed(self, filters: Mapping[str, str] | None = None) -> list[Container]:
        self._check("list_managed")
        wanted = dict(filters or {})
        return [
            c
            for c in list(self.containers.values())
            if self._in_scope(c.labels) and all(c.labels.get(k) == v for k, v in wanted.items())
        ]

    def logs(self, container_id: str, tail: int) -> str:
        self._check("logs")
        lines = self.written_logs.get(container_id, [])
        return "\n".join(lines[-tail:] if tail else [])

    def log_lines(
        self, container_id: str, *, tail: int, since: datetime | None = None
    ) -> list[LogLine]:
        self._check("logs")
        stamped = [
            LogLine(datetime(2026, 1, 1, 0, 0, i, tzinfo=UTC), text)
            for i, text in enumerate(self.written_logs.get(container_id, []))
        ]
        if since is not None:
            return [line for line in stamped if line.time > since]
        return stamped[-tail:]

    def stats(self, container_id: str, *, quick: bool = False) -> ContainerStats:
        self._check("stats")
        spec = self.specs.get(container_id)
        limit = spec.limits.memory_bytes if spec else 0
        return ContainerStats(12.5, 4096, limit, 3, 100, 200, 1_000_000, 10_000_000, 2)

    def events(self, since: datetime | None = None) -> Iterator[EngineEvent]:
        self._check("events")
        return iter(())

    def image_exists(self, image: str) -> bool:
        self._check("image_exists")
        return image in self.images

    def _image_id(self, image: str) -> str:
        default = "sha256:" + hashlib.sha256(image.encode()).hexdigest()
        return self.image_ids.get(image, default)

    def image_id(self, image: str) -> str | None:
        self._check("image_id")
        return self._image_id(image) if image in self.images else None

    def build_image(
        self, context: Path, dockerfile: str, tag: str, buildargs: Mapping[str, str] | None = None
    ) -> str:
        """The tag now exists and names a new image id (as after a real rebuild)."""
        self._check("build_image")
        build = f"{tag}#{next(self._builds)}"
        self.images.add(tag)
        self.image_ids[tag] = "sha256:" + hashlib.sha256(build.encode()).hexdigest()
        return self.image_ids[tag]


if TYPE_CHECKING:  # mypy checks here the roles the fake claims (all but SecurityInspector)
    _agents: type[AgentRuntime] = FakeRuntime
    _telemetry: type[ContainerTelemetry] = FakeRuntime
    _volumes: type[VolumeStore] = FakeRuntime
    _admin: type[EngineAdmin] = FakeRuntime
