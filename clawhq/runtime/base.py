"""The runtime boundary: what ClawHQ needs from a container engine, and typed container data.

The orchestrator talks only to :class:`Runtime`. ``DockerRuntime`` implements it on Docker
Engine; a Swarm implementation can follow behind the same interface.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from clawhq.runtime import labels


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
    port: PortBinding
    network: str
    volume: str
    volume_path: str
    log_max_size: str
    log_max_files: int
    secret_env: frozenset[str] = frozenset()
    tmpfs: Mapping[str, str] = field(
        default_factory=lambda: {"/tmp": "rw,noexec,nosuid,size=64m"}  # noqa: S108 (in-container tmpfs)
    )

    def config_hash(self) -> str:
        """A digest of the intended configuration, stamped as a label to detect drift.

        Values of ``secret_env`` are left out: they are secrets, and tokens rotate per deploy.
        """
        data = asdict(self)
        data["env"] = {k: ("<secret>" if k in self.secret_env else v) for k, v in self.env.items()}
        data["secret_env"] = sorted(self.secret_env)
        data["labels"] = {k: v for k, v in self.labels.items() if k != labels.CONFIG_HASH}
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
class EngineEvent:
    """One container event from the engine (``die``, ``oom``, ``start``, ``health_status``…)."""

    action: str
    container_id: str
    labels: Mapping[str, str]
    time: datetime
    attributes: Mapping[str, Any] = field(default_factory=dict)


class Runtime(Protocol):
    """The container engine, as the orchestrator sees it. Stop and remove are idempotent."""

    def ensure_network(self, name: str) -> str:
        """Create the isolated agent network if missing; return its gateway address."""
        ...

    def create(self, spec: ContainerSpec) -> Container: ...

    def start(self, container_id: str) -> None: ...

    def stop(self, container_id: str, timeout: int) -> None: ...

    def remove(self, container_id: str) -> bool:
        """Force-remove a container; False (not an error) when it was already gone."""
        ...

    def remove_volume(self, name: str) -> None: ...

    def list_volumes(self) -> list[Volume]:
        """This installation's workspace volumes (those labelled with its instance id)."""
        ...

    def inspect(self, container_id: str) -> Container | None:
        """The container, or ``None`` when the engine does not know it."""
        ...

    def claim(self, instance_id: str) -> None:
        """From now on, list and follow only containers labelled with this installation."""
        ...

    def list_managed(self, filters: Mapping[str, str] | None = None) -> list[Container]:
        """Containers carrying ClawHQ's service label, of the claimed installation, plus any
        extra label filters."""
        ...

    def logs(self, container_id: str, tail: int) -> str: ...

    def log_lines(
        self, container_id: str, *, tail: int, since: datetime | None = None
    ) -> list[LogLine]:
        """Timestamped lines: the last ``tail``, or those written after ``since``."""
        ...

    def stats(self, container_id: str, *, quick: bool = False) -> ContainerStats:
        """A resource sample; ``quick`` skips the engine's second reading (no ``cpu_percent``)."""
        ...

    def events(self, since: datetime | None = None) -> Iterator[EngineEvent]:
        """Container events of the claimed installation, from ``since`` on, as they happen."""
        ...

    def image_exists(self, image: str) -> bool: ...

    def ping(self) -> None:
        """Raise ``EngineUnavailable`` when the engine cannot be reached."""
        ...
