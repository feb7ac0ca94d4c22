"""Files written into a container through the engine (``put_archive``): the tar they travel in.

Docker extracts the archive into the container's file system as the engine sees it, mounts
included, whether the container runs or not; into a read-only root it refuses, so the file goes
on a mount. An entry already at the path (a file, a symlink, a folder) is replaced, never
followed: the extraction is confined to the container's root.
"""

from __future__ import annotations

import io
import posixpath
import tarfile

from clawhq.errors import EngineError


def file_archive(path: str, content: bytes, owner: str, mode: int) -> tuple[str, bytes]:
    """The folder to extract into and a tar holding one regular file: ``content`` as the
    basename of ``path``, owned by ``owner`` (``uid:gid``) with ``mode``."""
    folder, name = posixpath.split(path)
    if not posixpath.isabs(path) or not name or name in (".", ".."):
        raise EngineError(f"cannot put a file at {path!r}: not an absolute path to a file")
    uid, _, gid = owner.partition(":")
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.type = len(content), mode, tarfile.REGTYPE
        info.uid, info.gid = int(uid), int(gid or uid)
        tar.addfile(info, io.BytesIO(content))
    return folder, archive.getvalue()
