"""An in-memory runtime for unit tests of the layers above.

It implements every role of :class:`~clawhq.runtime.base.Runtime` but the security facts
(:class:`~clawhq.runtime.security.SecurityInspector`): an in-memory engine has no hardening to
report. Its event stream is scripted: the fake emits the engine's events as its containers
change, and tests add their own with :meth:`FakeRuntime.emit`.
"""

from __future__ import annotations

import hashlib
import itertools
import queue
import threading
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
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
    DiskUsage,
    EngineEvent,
    LogLine,
    Volume,
)
from tests.doubles.workspaces import FakeWorkspaces

if TYPE_CHECKING:
    from clawhq.runtime.base import AgentRuntime, ContainerTelemetry, EngineAdmin, VolumeStore


@dataclass
class _Subscriber:
    """One ``events()`` iterator: what was emitted for it, and whether ``close()`` ended it."""

    inbox: queue.Queue[EngineEvent] = field(default_factory=queue.Queue)
    ended: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True)
class PutFile:
    """A file ``put_file`` wrote into a container."""

    content: bytes
    owner: str
    mode: int


class FakeRuntime(FakeWorkspaces):
    """Containers as dicts. ``fail[method] = error`` makes the next calls of ``method`` raise;
    ``reachable = False`` makes every call raise ``EngineUnavailable``.

    ``files[id]`` are the files put into a container since its last start; a start takes them
    (as the agent image takes its secrets file) into ``started_with[id]``, one dict (path ->
    :class:`PutFile`) per start, so a test sees what each start of a container was handed.

    ``images`` are the tags that exist; ``image_ids[tag]`` is a tag's image id (by default
    ``sha256:`` and the tag's SHA-256, and a new one at each ``build_image``).
    """

    EVENT_POLL = 0.05  # seconds an events() iterator waits before looking at close/reachable
    EVENT_HISTORY = 1000  # past events kept for events(since=...)

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
        #: Why workspaces cannot get a capped disk (None: they can); ``disks[volume]`` is the
        #: size of each capped workspace made, ``disk_used[volume]`` what a test says it holds.
        self.disk_problem: str | None = None
        self.disks: dict[str, int] = {}
        self.disk_used: dict[str, int] = {}
        self.files: dict[str, dict[str, PutFile]] = {}
        self.started_with: dict[str, list[dict[str, PutFile]]] = {}
        self.reachable = True
        #: Like Docker's list endpoint, which answers from a view it updates after the event
        #: (a container listed as running right after its ``die``): while True, a changed
        #: container is listed as it was until :meth:`catch_up`; ``inspect`` is current.
        self.list_lags = False
        self._listed_as: dict[str, Container] = {}
        self._ids = itertools.count(1)
        self._builds = itertools.count(1)
        self._lock = threading.Lock()
        self._events_lock = threading.Lock()
        self._subscribers: list[_Subscriber] = []
        self._history: deque[EngineEvent] = deque(maxlen=self.EVENT_HISTORY)
        self._init_workspaces()

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

    # -- the event stream -----------------------------------------------------------------------

    def emit(self, event: EngineEvent) -> None:
        """Deliver ``event`` to every ``events()`` iterator open now, as the engine would: only
        if its labels are in scope (ClawHQ's service label, and the instance id if given)."""
        with self._events_lock:
            self._history.append(event)
            if not self._in_scope(event.labels):
                return
            for subscriber in self._subscribers:
                subscriber.inbox.put(event)

    def _emit_for(self, container: Container, action: str, **attributes: str) -> None:
        self.emit(
            EngineEvent(
                action=action,
                container_id=container.id,
                labels=dict(container.labels),
                time=datetime.now(UTC),
                attributes={
                    **container.labels,
                    "name": container.name,
                    "image": container.image,
                    **attributes,
                },
            )
        )

    def events(self, since: datetime | None = None) -> Iterator[EngineEvent]:
        """A blocking iterator of the events emitted from now on (and, with ``since``, of the
        kept ones from ``since`` on). It ends when :meth:`close` is called, and raises
        ``EngineUnavailable`` once ``reachable`` is False."""
        self._check("events")
        subscriber = _Subscriber()
        with self._events_lock:
            if since is not None:
                for past in self._history:
                    if past.time >= since and self._in_scope(past.labels):
                        subscriber.inbox.put(past)
            self._subscribers.append(subscriber)
        return self._follow(subscriber)

    def _follow(self, subscriber: _Subscriber) -> Iterator[EngineEvent]:
        try:
            while True:
                self._check("events")
                if subscriber.ended.is_set():
                    return
                try:
                    event = subscriber.inbox.get(timeout=self.EVENT_POLL)
                except queue.Empty:
                    continue
                if subscriber.ended.is_set():
                    return
                yield event
        finally:
            with self._events_lock:
                if subscriber in self._subscribers:
                    self._subscribers.remove(subscriber)

    def close(self) -> None:
        """End the ``events()`` iterators open now; the fake's state stays, and a later
        ``events()`` starts a new stream (as after reconnecting to the engine)."""
        with self._events_lock:
            for subscriber in self._subscribers:
                subscriber.ended.set()
            self._subscribers.clear()

    # -- AgentRuntime and the rest --------------------------------------------------------------

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
                ports=(spec.port,) if spec.port else (),
                image_id=self._image_id(spec.image),
            )
            self.containers[container.id] = container
            self.specs[container.id] = spec
            if spec.volume not in self.volumes and spec.disk_bytes is not None:
                if self.disk_problem is not None:
                    raise EngineError(self.disk_problem, code="disk_quota_unavailable")
                self.disks[spec.volume] = spec.disk_bytes
            elif spec.volume in self.disks and spec.disk_bytes is not None:
                self.disks[spec.volume] = max(self.disks[spec.volume], spec.disk_bytes)
            self.volumes.add(spec.volume)
            self.volume_labels[spec.volume] = spec.volume_labels()
        self._emit_for(container, "create")
        return container

    def _set(self, ref: str, **changes: object) -> tuple[Container, Container]:
        """Change a container; return it before and after."""
        with self._lock:
            container = self._find(ref)
            if container is None:
                raise EngineError(f"no such container: {ref}")
            changed = replace(container, **changes)  # type: ignore[arg-type]
            self.containers[container.id] = changed
            if self.list_lags:
                self._listed_as.setdefault(container.id, container)
            return container, changed

    def catch_up(self) -> None:
        """The list view catches up with the containers (see ``list_lags``)."""
        with self._lock:
            self._listed_as.clear()

    def put_file(
        self, container_id: str, path: str, content: bytes, *, owner: str, mode: int = 0o400
    ) -> None:
        self._check("put_file")
        with self._lock:
            container = self._find(container_id)
            spec = self.specs.get(container.id) if container is not None else None
            if container is None or spec is None:
                raise EngineError(f"no such container: {container_id}")
            if container.is_running:  # its root is read-only: Docker refuses
                raise EngineError(f"container {container_id[:12]} is running")
            if not path.startswith(spec.volume_path.rstrip("/") + "/"):
                raise EngineError(f"{path}: read-only file system")
            self.files.setdefault(container.id, {})[path] = PutFile(content, owner, mode)

    def start(self, container_id: str) -> None:
        self._check("start")
        with self._lock:
            found = self._find(container_id)
            if found is not None:
                taken = self.files.pop(found.id, {})
                self.started_with.setdefault(found.id, []).append(taken)
        n = int(container_id[4:]) if container_id.startswith("fake") else 0
        _, started = self._set(
            container_id,
            state=ContainerState.RUNNING,
            started_at=datetime.now(UTC),
            address=f"127.77.{n // 250 % 250}.{n % 250 + 2}",  # loopback: nothing leaves
        )
        self._emit_for(started, "start")

    def stop(self, container_id: str, timeout: int) -> None:
        self._check("stop")
        if self._find(container_id):
            before, stopped = self._set(
                container_id, state=ContainerState.EXITED, exit_code=0, address=""
            )
            if before.is_running:
                self._emit_for(stopped, "die", exitCode="0")

    def crash(self, container_id: str, exit_code: int = 137, oom: bool = False) -> None:
        """Test helper: the container dies on its own (``oom``, then ``die``, events)."""
        _, died = self._set(
            container_id,
            state=ContainerState.EXITED,
            exit_code=exit_code,
            oom_killed=oom,
            address="",
        )
        if oom:
            self._emit_for(died, "oom")
        self._emit_for(died, "die", exitCode=str(exit_code))

    def remove(self, container_id: str) -> bool:
        self._check("remove")
        with self._lock:
            container = self._find(container_id)
            if container is None:
                return False
            del self.containers[container.id]
            self.specs.pop(container.id, None)
            self.files.pop(container.id, None)
        if container.is_running:  # a forced remove kills it first
            self._emit_for(container, "die", exitCode="137")
        self._emit_for(container, "destroy")
        return True

    def remove_volume(self, name: str) -> None:
        self._check("remove_volume")
        self.volumes.discard(name)
        self.disks.pop(name, None)
        self.disk_used.pop(name, None)
        self.volume_labels.pop(name, None)

    def list_volumes(self) -> list[Volume]:
        self._check("list_volumes")
        return [
            Volume(name, found.get(labels.VOLUME_OF, ""), found.get(labels.USER_ID, ""))
            for name, found in list(self.volume_labels.items())
            if self._in_scope(found)
        ]

    def disk_support(self) -> str | None:
        return self.disk_problem

    def disk_usage(self, name: str) -> DiskUsage | None:
        self._check("disk_usage")
        size = self.disks.get(name)
        if size is None:
            return None
        used = self.disk_used.get(name, 0)
        return DiskUsage(used_bytes=used, size_bytes=size, free_bytes=size - used)

    def inspect(self, container_id: str) -> Container | None:
        self._check("inspect")
        return self._find(container_id)

    def list_managed(self, filters: Mapping[str, str] | None = None) -> list[Container]:
        self._check("list_managed")
        wanted = dict(filters or {})
        return [
            self._listed_as.get(c.id, c)
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
