"""The runtime boundary: what ClawHQ needs from a container engine, and typed container data.

The engine's interface is split by role: :class:`AgentRuntime` (the agents' containers and
their events), :class:`ContainerTelemetry` (logs and resource samples), :class:`VolumeStore`
(workspace volumes), :class:`WorkspaceArchives` (their files as tar streams),
:class:`EngineAdmin` (network and images) and, in ``security``,
:class:`~clawhq.runtime.security.SecurityInspector` (hardening facts). :class:`Runtime` is
all of them at once: what ``DockerRuntime`` and the metered wrapper implement, and what the
composition root hands around. A runtime built with an ``instance_id`` lists and follows only
that installation's containers and volumes.

A second runtime, Docker Swarm, would implement :class:`AgentRuntime` with a one-replica
service per agent instead of a container: ``create`` makes the service with 0 replicas,
``start``/``stop`` scale it to 1/0, ``inspect`` and ``list_managed`` report each service with
its current task's observed state (running, failed, shutdown…) as the container's state, and
``events`` turns task state changes into start/die events; ``ensure_network`` makes an overlay.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from clawhq.runtime import labels
from clawhq.runtime.security import SecurityInspector


class ContainerState(StrEnum):
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    RESTARTING = "restarting"
    REMOVING = "removing"
    EXITED = "exited"
    DEAD = "dead"


@dataclass(frozen=True)
class PortBinding:
    host_ip: str
    host_port: int
    container_port: int


@dataclass(frozen=True)
class Limits:
    memory_bytes: int
    cpu_quota: int
    cpu_period: int
    pids_limit: int


@dataclass(frozen=True)
class ContainerSpec:
    """Everything needed to create one agent container; hardening is not optional here."""

    name: str
    image: str
    env: Mapping[str, str]
    labels: Mapping[str, str]
    user: str
    limits: Limits
    #: The host port the gateway is published on; ``None`` publishes nothing (ClawHQ reaches
    #: agents at their address on the agent network either way).
    port: PortBinding | None
    network: str
    volume: str
    volume_path: str
    log_max_size: str
    log_max_files: int
    secret_env: frozenset[str] = frozenset()
    #: The same for every container of one agent, so that what the agent keeps about its own
    #: processes (OpenClaw's gateway lease names the host) stays true across recreates.
    hostname: str = ""
    tmpfs: Mapping[str, str] = field(
        default_factory=lambda: {"/tmp": "rw,noexec,nosuid,size=64m"}  # noqa: S108 (in-container tmpfs)
    )
    #: The workspace's cap: with a size, the volume is a filesystem of its own that size
    #: (docs/disks.md); ``None``, a plain volume. Left out of the hash: it is the volume's, not
    #: the container's, and a workspace made earlier keeps its kind.
    disk_bytes: int | None = None
    #: The resolvers Docker's embedded DNS (127.0.0.11 in the container) forwards the names it
    #: does not know to; empty: the engine's own (the host's). See docs/egress.md.
    dns: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Secrets never enter a container's env (docker inspect, /proc/<pid>/environ of its
        # init): they are handed over as a file before each start (``put_file``).
        leaked = sorted(self.secret_env & set(self.env))
        if leaked:
            raise ValueError(f"secrets in the container's env: {', '.join(leaked)}")

    def config_hash(self) -> str:
        """A digest of the intended configuration, stamped as a label to detect drift.

        ``secret_env`` names the secrets the container gets by file, never in its env; their
        values are in no spec, and they rotate with every start.
        """
        data = asdict(self)
        data["secret_env"] = sorted(self.secret_env)
        data.pop("disk_bytes")
        if not self.dns:  # the engine's resolvers: hashes from before the field stay the same
            data.pop("dns")
        data["labels"] = {
            k: v for k, v in self.labels.items() if k not in (labels.CONFIG_HASH, labels.START)
        }
        blob = json.dumps(data, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def volume_labels(self) -> dict[str, str]:
        """The workspace volume's labels: whose agent it holds, and which installation's."""
        return {
            labels.SERVICE: labels.SERVICE_AGENT,
            labels.VOLUME_OF: self.labels.get(labels.AGENT_ID, ""),
            labels.USER_ID: self.labels.get(labels.USER_ID, ""),
            labels.INSTANCE: self.labels.get(labels.INSTANCE, ""),
        }


@dataclass(frozen=True)
class Container:
    """What the engine reports about one container."""

    id: str
    name: str
    image: str
    state: ContainerState
    labels: Mapping[str, str]
    exit_code: int | None = None
    oom_killed: bool = False
    error: str = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    health: str | None = None
    ports: tuple[PortBinding, ...] = ()
    image_id: str = ""  # the engine's id (sha256:…) of the image it was created from
    #: Its IPv4 address on the agent network ("" while it is not running).
    address: str = ""

    @property
    def is_running(self) -> bool:
        return self.state is ContainerState.RUNNING

    @property
    def agent_id(self) -> str | None:
        return self.labels.get(labels.AGENT_ID)

    @property
    def user_id(self) -> str | None:
        return self.labels.get(labels.USER_ID)

    def describe_exit(self) -> str:
        """A sentence a user understands about why the container is not running."""
        if self.oom_killed:
            return (
                f"the agent ran out of memory and was killed (exit code {self.exit_code}); "
                "its memory limit is too small for what it was doing"
            )
        if self.error:
            return f"the container failed: {self.error}"
        return f"the agent process exited with code {self.exit_code}"


@dataclass(frozen=True)
class LogLine:
    time: datetime
    text: str


@dataclass(frozen=True)
class ContainerStats:
    """One resource sample. ``cpu_percent`` is 100 for one full core; it is 0 for a quick
    sample, which has no previous reading: compare ``cpu_usage_ns``/``system_usage_ns`` of two
    samples instead."""

    cpu_percent: float
    memory_bytes: int
    memory_limit_bytes: int
    pids: int
    network_rx_bytes: int
    network_tx_bytes: int
    cpu_usage_ns: int = 0
    system_usage_ns: int = 0
    online_cpus: int = 1


@dataclass(frozen=True)
class Volume:
    """An agent's workspace volume, as the engine lists it."""

    name: str
    agent_id: str
    user_id: str
    created_at: str = ""


@dataclass(frozen=True)
class DiskUsage:
    """A capped workspace's filesystem use (``statvfs`` on its mount point)."""

    used_bytes: int
    size_bytes: int
    #: What the agent may still write (ext4 keeps a little back for its own allocations).
    free_bytes: int


@dataclass(frozen=True)
class EngineEvent:
    """One container event from the engine (``die``, ``oom``, ``start``, ``health_status``…)."""

    action: str
    container_id: str
    labels: Mapping[str, str]
    time: datetime
    attributes: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class AgentRuntime(Protocol):
    """The agents' containers: their lifecycle and their events. Stop and remove are idempotent.

    Listing and events cover only containers with ClawHQ's service label and, when the runtime
    was built with an ``instance_id``, that installation's label.
    """

    def create(self, spec: ContainerSpec) -> Container:
        """Create (not start) the container, and its workspace volume when missing."""
        ...

    def put_file(
        self, container_id: str, path: str, content: bytes, *, owner: str, mode: int = 0o400
    ) -> None:
        """Write ``content`` at ``path`` in a container that is created or stopped, owned by
        ``owner`` (``uid:gid``), replacing what is there. The root file system is read-only:
        ``path`` must be on a mount (the workspace volume). ClawHQ hands an agent its secrets
        this way before each start, never in its env."""
        ...

    def start(self, container_id: str) -> None: ...

    def stop(self, container_id: str, timeout: int) -> None:
        """Stop within ``timeout`` seconds (then kill); a missing container is not an error."""
        ...

    def remove(self, container_id: str) -> bool:
        """Force-remove a container; False (not an error) when it was already gone."""
        ...

    def inspect(self, container_id: str) -> Container | None:
        """The container, or ``None`` when the engine does not know it."""
        ...

    def list_managed(self, filters: Mapping[str, str] | None = None) -> list[Container]:
        """This installation's agent containers, narrowed by any extra label filters."""
        ...

    def events(self, since: datetime | None = None) -> Iterator[EngineEvent]:
        """This installation's container events, from ``since`` on, as they happen; the
        iterator blocks between events and raises ``EngineUnavailable`` if the engine goes."""
        ...

    def ping(self) -> None:
        """Raise ``EngineUnavailable`` when the engine cannot be reached."""
        ...

    def close(self) -> None:
        """Release the connection to the engine."""
        ...


@runtime_checkable
class ContainerTelemetry(Protocol):
    """What a container says and uses: its output and resource samples."""

    def logs(self, container_id: str, tail: int) -> str: ...

    def log_lines(
        self, container_id: str, *, tail: int, since: datetime | None = None
    ) -> list[LogLine]:
        """Timestamped lines: the last ``tail``, or those written after ``since``."""
        ...

    def stats(self, container_id: str, *, quick: bool = False) -> ContainerStats:
        """A resource sample; ``quick`` skips the engine's second reading (no ``cpu_percent``)."""
        ...


@runtime_checkable
class VolumeStore(Protocol):
    """The agents' workspace volumes (``create`` makes them; with ``disk_bytes``, each on a
    capped disk of its own, mounted again by ``create``, ``put_file`` and ``start`` when
    needed, and removed with the volume)."""

    def remove_volume(self, name: str) -> None:
        """Remove the volume; a missing one is not an error."""
        ...

    def list_volumes(self) -> list[Volume]:
        """This installation's workspace volumes (all agents' when built without one)."""
        ...

    def disk_support(self) -> str | None:
        """``None`` when workspaces can get a capped disk of their own on this engine's host
        (``ContainerSpec.disk_bytes``), else why not, in plain words."""
        ...

    def disk_usage(self, name: str) -> DiskUsage | None:
        """The use of the volume's capped disk (``None``: a plain volume, or not mounted)."""
        ...


@runtime_checkable
class WorkspaceArchives(Protocol):
    """A workspace volume's contents as a tar stream, out and in (docs/backups.md). Both go
    through a helper container that is created, never started, and removed after: it mounts
    the volume where the agent's container does, and the engine copies files through it."""

    def export_volume(self, name: str, image: str, path: str) -> Iterator[bytes]:
        """The volume's files as an uncompressed tar (members ``./…``), streamed from the
        engine; ``image`` makes the helper, mounting the volume at ``path``. A missing volume
        raises ``workspace_not_found`` before the first byte."""
        ...

    def import_volume(self, spec: ContainerSpec, archive: Iterable[bytes]) -> None:
        """Replace the workspace volume of ``spec`` by a fresh one (on a new capped disk when
        ``spec.disk_bytes``) holding the tar or tar.gz ``archive``. No container may be using
        the volume (the engine refuses otherwise, and nothing is removed)."""
        ...


@runtime_checkable
class EngineAdmin(Protocol):
    """What the engine holds for all agents: their network and the images."""

    def ensure_network(self, name: str) -> str:
        """Create the isolated agent network if missing; return its gateway address."""
        ...

    def image_exists(self, image: str) -> bool: ...

    def image_id(self, image: str) -> str | None:
        """The full id (``sha256:…``) of the image a tag names now, or ``None`` when missing;
        compare it with :attr:`Container.image_id` to see that a tag moved to a new image."""
        ...

    def build_image(
        self, context: Path, dockerfile: str, tag: str, buildargs: Mapping[str, str] | None = None
    ) -> str:
        """Build an image from a local folder, tag it, and return its id."""
        ...


@runtime_checkable
class Runtime(
    AgentRuntime,
    ContainerTelemetry,
    VolumeStore,
    WorkspaceArchives,
    EngineAdmin,
    SecurityInspector,
    Protocol,
):
    """The whole container engine: every role above. Consumers that need one role should
    take that protocol; the composition root builds one ``Runtime`` and passes it around."""
