"""The fake runtime's ``WorkspaceArchives``: each workspace's files as a dict, out and in as tar."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from clawhq.errors import ClawHQError, EngineError, NotFound
from clawhq.runtime.base import ContainerSpec

if TYPE_CHECKING:
    from clawhq.runtime.base import WorkspaceArchives


class FakeWorkspaces:
    """``workspace_files[volume]`` (path -> bytes) is what a workspace holds; a test writes
    into it as the agent would. ``fail_archives[method] = error`` makes that method raise;
    ``fail_import_after`` (bytes) makes an import break half-way, after replacing the volume."""

    volumes: set[str]
    volume_labels: dict[str, dict[str, str]]
    specs: dict[str, ContainerSpec]

    def _init_workspaces(self) -> None:
        self.workspace_files: dict[str, dict[str, bytes]] = {}
        self.fail_archives: dict[str, ClawHQError] = {}
        self.fail_import_after: int | None = None
        self.exports = 0

    def export_volume(self, name: str, image: str, path: str) -> Iterator[bytes]:
        if "export_volume" in self.fail_archives:
            raise self.fail_archives["export_volume"]
        if name not in self.volumes:
            raise NotFound(f"the agent has no workspace yet ({name})", code="workspace_not_found")
        self.exports += 1
        files = dict(self.workspace_files.get(name, {}))
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for member, content in sorted(files.items()):
                info = tarfile.TarInfo(f"./{member}")
                info.size, info.uid, info.gid = len(content), 1001, 1001
                tar.addfile(info, io.BytesIO(content))
        data = buffer.getvalue()
        return iter([data[i : i + 4096] for i in range(0, len(data), 4096)])

    def import_volume(self, spec: ContainerSpec, archive: Iterable[bytes]) -> None:
        if "import_volume" in self.fail_archives:
            raise self.fail_archives["import_volume"]
        if any(s.volume == spec.volume for s in self.specs.values()):
            raise EngineError(f"volume {spec.volume} is in use", code="workspace_in_use")
        self.volumes.add(spec.volume)
        self.volume_labels[spec.volume] = spec.volume_labels()
        self.workspace_files[spec.volume] = {}
        data = bytearray()
        for chunk in archive:
            data += chunk
            if self.fail_import_after is not None and len(data) >= self.fail_import_after:
                self.fail_import_after = None
                raise EngineError(f"write the workspace {spec.volume}: connection reset")
        files: dict[str, bytes] = {}
        with tarfile.open(fileobj=io.BytesIO(bytes(data)), mode="r:*") as tar:
            for member in tar:
                handle = tar.extractfile(member) if member.isfile() else None
                if handle is not None:
                    files[member.name.removeprefix("./")] = handle.read()
        self.workspace_files[spec.volume] = files


if TYPE_CHECKING:
    _archives: type[WorkspaceArchives] = FakeWorkspaces
