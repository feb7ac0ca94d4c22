"""Workspace archives (the plaintext of a backup): tar.gz streams written piece by piece.

:class:`TarGzWriter` emits a normalised archive — regular files and directories only, owned
by the agent's user (1001:1001), modes 0755/0644 — without ever holding more than one piece of
a file. :func:`gzip_stream` compresses a tar stream as it comes (the engine's ``get_archive``),
and :func:`directory_archive` archives a directory on this host.
"""

from __future__ import annotations

import os
import stat
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

#: The agent's user and group inside its container (clawhq.controller.spec.AGENT_UID_GID).
OWNER_UID = OWNER_GID = 1001
READ_SIZE = 1024**2
_MAX_MTIME = 8**11 - 1  # the largest a ustar header holds without a pax record


def _gzip() -> zlib._Compress:
    return zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)


def gzip_stream(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """``chunks`` gzip-compressed, as they come."""
    compressor = _gzip()
    for chunk in chunks:
        if out := compressor.compress(chunk):
            yield out
    yield compressor.flush()


def _info(name: str, kind: bytes, mode: int, mtime: int | float) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode = kind, mode
    info.uid, info.gid, info.uname, info.gname = OWNER_UID, OWNER_GID, "", ""
    info.mtime = min(max(int(mtime), 0), _MAX_MTIME)
    return info


class TarGzWriter:
    """Writes a tar.gz one member at a time; each call returns the compressed bytes it made."""

    def __init__(self) -> None:
        self._compressor = _gzip()
        self._offset = 0  # uncompressed bytes written so far

    def _put(self, data: bytes | memoryview) -> bytes:
        self._offset += len(data)
        return self._compressor.compress(data)

    def directory(self, name: str, *, mtime: int | float = 0) -> bytes:
        """A directory ``name`` (mode 0755)."""
        info = _info(name, tarfile.DIRTYPE, 0o755, mtime)
        return self._put(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict"))

    def file(
        self,
        name: str,
        size: int,
        chunks: Iterable[bytes],
        *,
        executable: bool = False,
        mtime: int | float = 0,
    ) -> Iterator[bytes]:
        """A regular file of exactly ``size`` bytes taken from ``chunks`` (0755 if
        ``executable``, else 0644); a different size raises ValueError."""
        info = _info(name, tarfile.REGTYPE, 0o755 if executable else 0o644, mtime)
        info.size = size
        if out := self._put(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict")):
            yield out
        written = 0
        for chunk in chunks:
            written += len(chunk)
            if written > size:
                raise ValueError(f"{name}: more than the {size} bytes announced")
            if out := self._put(chunk):
                yield out
        if written != size:
            raise ValueError(f"{name}: {written} bytes, not the {size} announced")
        if out := self._put(bytes(-size % tarfile.BLOCKSIZE)):
            yield out

    def close(self) -> bytes:
        """The end-of-archive blocks, padding to a whole record, and the gzip trailer."""
        end = 2 * tarfile.BLOCKSIZE
        end += -(self._offset + end) % tarfile.RECORDSIZE
        return self._put(bytes(end)) + self._compressor.flush()


def _file_chunks(path: Path, size: int) -> Iterator[bytes]:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as handle:
        left = size
        while left:
            chunk = handle.read(min(READ_SIZE, left))
            if not chunk:
                raise ValueError(f"{path} shrank while it was archived")
            left -= len(chunk)
            yield chunk


def directory_archive(root: Path) -> Iterator[bytes]:
    """A tar.gz of what is under ``root`` (names relative to it, sorted): its directories and
    regular files, normalised like an upload. Symbolic links and special files are left out;
    a file that changes size while it is read raises ValueError."""
    writer = TarGzWriter()
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        base = Path(folder)
        relative = base.relative_to(root).as_posix()
        if relative != "." and (out := writer.directory(relative, mtime=base.lstat().st_mtime)):
            yield out
        for name in sorted(files):
            path = base / name
            found = path.lstat()
            if not stat.S_ISREG(found.st_mode):
                continue
            member = name if relative == "." else f"{relative}/{name}"
            executable = bool(found.st_mode & 0o111)
            chunks = _file_chunks(path, found.st_size)
            yield from writer.file(
                member, found.st_size, chunks, executable=executable, mtime=found.st_mtime
            )
    yield writer.close()
