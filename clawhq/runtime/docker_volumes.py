"""Workspace volumes on Docker Engine, plain or on a capped disk of their own (docs/disks.md).

A capped workspace is a volume of the ``local`` driver bound (``type=none,o=bind``) to the
mount point of its disk (``disks.HostDisks``), so containers, ``put_archive`` and every other
part of ClawHQ keep using a named volume. The disk is mounted before anything uses the volume
(``create``, ``put_file`` and ``start``: after a reboot nothing is mounted) and removed with
the volume. A volume that exists already keeps its kind: a workspace made before disks, or on
a host that could not make them, stays a plain volume.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import docker.errors

from clawhq.errors import EngineError
from clawhq.runtime import labels
from clawhq.runtime.base import DiskUsage, Volume
from clawhq.runtime.disks import HostDisks
from clawhq.runtime.docker_errors import engine_errors

log = logging.getLogger(__name__)


class DockerVolumes:
    """The ``VolumeStore`` half of ``DockerRuntime`` (which sets the attributes below)."""

    _client: Any
    _api: Any
    _scope: list[str]
    _disks: HostDisks
    #: Why workspaces get no disk of their own here whatever the host can do ("" when they can).
    _no_disks: str

    def disk_support(self) -> str | None:
        return self._no_disks or self._disks.support()

    def disk_usage(self, name: str) -> DiskUsage | None:
        if self.disk_support() is not None:
            return None
        try:
            return self._disks.usage(self._disks.mount_point(name))
        except (OSError, EngineError):
            return None

    def _ensure_volume(
        self, name: str, size: int | None, volume_labels: Mapping[str, str], owner: str
    ) -> None:
        """The workspace volume, made when missing (on a disk of ``size`` bytes when given,
        its root folder ``owner``'s), its disk mounted and grown to ``size`` when it has one."""
        found = self._volume(name)
        if found is not None:
            point = self._disk_of(found)
            if point is None:
                return  # a plain volume keeps its kind
            if size is not None and point == self._disks.mount_point(name):
                self._disks.ensure(name, size, owner)
            else:
                self._disks.mount(point)
            return
        options: dict[str, str] = {}
        if size is not None:
            problem = self.disk_support()
            if problem is not None:
                raise EngineError(
                    f"cannot make the capped workspace disk of {name}: {problem}",
                    code="disk_quota_unavailable",
                )
            point = self._disks.ensure(name, size, owner)
            options = {"type": "none", "o": "bind", "device": str(point)}
        with engine_errors(f"create volume {name}"):
            self._client.volumes.create(
                name, driver="local", driver_opts=options or None, labels=dict(volume_labels)
            )

    def _mount_workspaces(self, container_id: str) -> None:
        """Mount the disks of the container's capped volumes (after a reboot they are not)."""
        with engine_errors(f"inspect container {container_id[:12]}"):
            try:
                mounts = self._api.inspect_container(container_id).get("Mounts") or []
            except docker.errors.NotFound:
                return  # the engine's own error follows
        for mount in mounts:
            if mount.get("Type") != "volume" or mount.get("Driver") != "local":
                continue
            found = self._volume(str(mount.get("Name", "")))
            point = self._disk_of(found) if found is not None else None
            if point is not None:
                self._disks.mount(point)

    def remove_volume(self, name: str) -> None:
        found = self._volume(name)
        point = self._disk_of(found) if found is not None else None
        with engine_errors(f"remove volume {name}"), contextlib.suppress(docker.errors.NotFound):
            self._api.remove_volume(name, force=True)
        if point is None:  # a disk made for a volume that was never created
            candidate = self._disks.root / name
            point = candidate if HostDisks.is_disk(candidate) else None
        if point is not None:
            self._disks.remove(point)
            log.info("removed the workspace disk of %s", name)

    def list_volumes(self) -> list[Volume]:
        with engine_errors("list workspace volumes"):
            found = self._api.volumes(filters={"label": self._scope}).get("Volumes") or []
        return [
            Volume(
                name=v["Name"],
                agent_id=(v.get("Labels") or {}).get(labels.VOLUME_OF, ""),
                user_id=(v.get("Labels") or {}).get(labels.USER_ID, ""),
                created_at=v.get("CreatedAt", ""),
            )
            for v in found
        ]

    def _volume(self, name: str) -> dict[str, Any] | None:
        with engine_errors(f"inspect volume {name}"):
            try:
                return dict(self._api.inspect_volume(name))
            except docker.errors.NotFound:
                return None

    @staticmethod
    def _disk_of(volume: Mapping[str, Any]) -> Path | None:
        """The mount point of the volume's disk, or ``None`` for a plain volume."""
        options = volume.get("Options") or {}
        if volume.get("Driver") != "local" or options.get("o") != "bind":
            return None
        device = Path(str(options.get("device", "")))
        if device.name != volume.get("Name") or not HostDisks.is_disk(device):
            return None  # a bind ClawHQ did not make: not ours to mount or remove
        return device
