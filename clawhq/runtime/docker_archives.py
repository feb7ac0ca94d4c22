"""Workspace files out of and into their volume on Docker Engine, as tar streams.

The engine copies files (``get_archive``, ``put_archive``) through a container, running or
not: a helper is created from the agent's image with the volume where the agent mounts it,
never started (no process of it ever runs, no network), used, and removed. It carries neither
ClawHQ's agent service label nor an agent id, so the controller never takes it for an agent's.
Mounting the volume at the agent's own path keeps what a new volume gets from the image there
(its owner, the image's files), as the agent's first start would.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Iterable, Iterator

import docker.errors

from clawhq.errors import EngineError, NotFound
from clawhq.runtime import labels
from clawhq.runtime.base import ContainerSpec
from clawhq.runtime.docker_errors import engine_errors
from clawhq.runtime.docker_volumes import DockerVolumes

log = logging.getLogger(__name__)

#: The label of the helper containers (never ClawHQ's agent service label).
HELPER = "clawhq.workspace-helper"
_CHUNK = 1024**2


class DockerArchives(DockerVolumes):
    """The ``WorkspaceArchives`` part of ``DockerRuntime``."""

    instance_id: str | None

    def export_volume(self, name: str, image: str, path: str) -> Iterator[bytes]:
        if self._volume(name) is None:
            raise NotFound(f"the agent has no workspace yet ({name})", code="workspace_not_found")
        helper = self._helper(name, image, path, read_only=True)
        try:
            self._mount_workspaces(helper)
            with engine_errors(f"read the workspace {name}"):
                stream, _ = self._api.get_archive(helper, f"{path}/.", chunk_size=_CHUNK)
        except BaseException:
            self._drop_helper(helper)
            raise
        return self._streamed(name, helper, stream)

    def _streamed(self, name: str, helper: str, stream: Iterable[bytes]) -> Iterator[bytes]:
        try:
            with engine_errors(f"read the workspace {name}"):
                yield from stream
        finally:
            self._drop_helper(helper)

    def import_volume(self, spec: ContainerSpec, archive: Iterable[bytes]) -> None:
        if self._volume(spec.volume) is not None:
            self._remove_unused(spec.volume)
        self._ensure_volume(spec.volume, spec.disk_bytes, spec.volume_labels(), spec.user)
        helper = self._helper(spec.volume, spec.image, spec.volume_path, read_only=False)
        try:
            self._mount_workspaces(helper)
            with engine_errors(f"write the workspace {spec.volume}"):
                if not self._api.put_archive(helper, spec.volume_path, iter(archive)):
                    raise EngineError(f"write the workspace {spec.volume}: refused")
        finally:
            self._drop_helper(helper)

    def _remove_unused(self, name: str) -> None:
        """Remove the volume, refusing (and keeping it) while any container uses it."""
        with engine_errors(f"look for containers using {name}"):
            users = self._api.containers(all=True, filters={"volume": name})
        if users:
            names = ", ".join(str((c.get("Names") or ["?"])[0]).lstrip("/") for c in users)
            raise EngineError(
                f"cannot replace the workspace {name}: containers use it ({names})",
                code="workspace_in_use",
            )
        self.remove_volume(name)

    def _helper(self, volume: str, image: str, path: str, *, read_only: bool) -> str:
        helper_labels = {HELPER: volume, labels.INSTANCE: self.instance_id or ""}
        with engine_errors(f"create a helper container for {volume}"):
            created = self._api.create_container(
                image,
                name=f"clawhq-workspace-helper-{secrets.token_hex(6)}",
                entrypoint=["/nonexistent"],  # never started: it only holds the mount
                command=[],
                labels=helper_labels,
                network_disabled=True,
                host_config=self._api.create_host_config(
                    binds={volume: {"bind": path, "mode": "ro" if read_only else "rw"}},
                    network_mode="none",
                    read_only=True,
                    cap_drop=["ALL"],
                    security_opt=["no-new-privileges:true"],
                ),
            )
        return str(created["Id"])

    def _drop_helper(self, helper: str) -> None:
        with contextlib.suppress(docker.errors.NotFound), engine_errors("remove a helper"):
            self._api.remove_container(helper, force=True)
