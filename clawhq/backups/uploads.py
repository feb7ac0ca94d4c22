"""User-uploaded workspace archives: hostile input, checked and normalised while it streams.

:func:`normalise_upload` reads a ``.tar.gz`` piece by piece (gunzip here, then ``tarfile`` in
stream mode ``r|``) and yields a normalised tar.gz of the same files: regular files and
directories only, owned by 1001:1001, modes 0755/0644, nothing else kept from the headers
(no xattrs, no owners, no pax records). It refuses, naming the member, absolute paths, ``..``,
links of either kind, devices, fifos, sparse files, setuid/setgid/sticky bits, duplicate
paths and anything tarfile cannot parse (``archive_invalid``, 400); and a compressed input, an
unpacked size or a member count over its cap (``archive_too_large``, 413). The error is raised
from the iteration, so a store writing the stream aborts and keeps nothing.
"""

from __future__ import annotations

import hashlib
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Self, cast

from clawhq.backups.archive import TarGzWriter
from clawhq.errors import ArchiveInvalid, ArchiveTooLarge
from clawhq.settings import Settings

#: The most a pax or GNU long-name header may hold (tarfile reads one whole into memory).
MAX_META = 256 * 1024
MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255
MAX_DEPTH = 128
MAX_NESTED_HEADERS = 4
MAX_GLOBAL_KEYS = 64
_STEP = 64 * 1024  # gunzip output per step, so a bomb never unpacks at once
_META_TYPES = (
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
)


@dataclass(frozen=True)
class UploadLimits:
    """Caps on one upload: compressed bytes, unpacked bytes (headers too), members."""

    max_compressed: int
    max_unpacked: int
    max_members: int

    @classmethod
    def from_settings(cls, settings: Settings) -> UploadLimits:
        return cls(
            settings.backup_max_upload, settings.backup_max_unpacked, settings.backup_max_members
        )


class _Gunzip:
    """A readable of the gunzipped upload for tarfile, counting against the caps."""

    def __init__(self, chunks: Iterable[bytes], limits: UploadLimits) -> None:
        self._chunks = iter(chunks)
        self._limits = limits
        self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._buffer = bytearray()
        self.compressed = self.unpacked = 0
        self._started = self._ended = False
        self._inflate_fresh = True  # no input given to the current gzip member yet

    def _next_input(self) -> bytes | None:
        for chunk in self._chunks:
            if chunk:
                self.compressed += len(chunk)
                if self.compressed > self._limits.max_compressed:
                    raise ArchiveTooLarge(f"the upload is over {self._limits.max_compressed} bytes")
                return chunk
        return None

    def _fill(self) -> None:
        data = self._inflate.unconsumed_tail  # input held back when a step's output was full
        if not data:
            if self._inflate.eof:
                data = self._inflate.unused_data
                if not data:
                    data = self._next_input() or b""
                if not data:
                    self._ended = True
                    return
                self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)  # a further gzip member
                self._inflate_fresh = True
            else:
                data = self._next_input() or b""
                if not data:
                    if not self._started:
                        raise ArchiveInvalid("the upload is empty")
                    raise ArchiveInvalid("the archive is truncated (its gzip stream ends early)")
        fresh = self._inflate_fresh
        self._started, self._inflate_fresh = True, False
        try:
            out = self._inflate.decompress(data, _STEP)
        except zlib.error as exc:
            if fresh and not b"\x1f\x8b".startswith(data[:2]):
                if self.unpacked:
                    raise ArchiveInvalid("the upload has data after its gzip stream") from None
                raise ArchiveInvalid(
                    "the upload is not gzip-compressed (a .tar.gz is expected)"
                ) from None
            raise ArchiveInvalid(f"the upload's gzip stream is corrupt ({exc})") from None
        self.unpacked += len(out)
        if self.unpacked > self._limits.max_unpacked:
            raise ArchiveTooLarge(f"the archive unpacks to over {self._limits.max_unpacked} bytes")
        self._buffer += out

    def read(self, size: int = -1) -> bytes:
        while (size < 0 or len(self._buffer) < size) and not self._ended:
            self._fill()
        size = len(self._buffer) if size < 0 else size
        out = bytes(self._buffer[:size])
        del self._buffer[:size]
        return out

    def drain(self) -> None:
        """Read to the end: only zero padding may follow the archive, and the gzip trailer
        (its CRC and length) is verified on the way."""
        while data := self.read(_STEP):
            if data.count(0) != len(data):
                raise ArchiveInvalid("the archive has data after its end")


class _Archive(tarfile.TarFile):
    """A tarfile that counts how deep extension headers nest (each level holds one)."""

    nested_headers = 0


class _Member(tarfile.TarInfo):
    """Refuses malformed headers, oversized or chained metadata and sparse files before
    tarfile reads them into memory (tarfile alone ends quietly at a bad header)."""

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Self:
        try:
            return super().frombuf(buf, encoding, errors)
        except tarfile.TarError as exc:
            if len(buf) == tarfile.BLOCKSIZE and not any(buf):
                raise  # a zero block: the end of the archive
            if not buf:
                raise ArchiveInvalid("the archive ends without its end-of-archive blocks") from None
            raise ArchiveInvalid(f"the archive has a malformed header ({exc})") from None

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise ArchiveInvalid(f"archive member {_show(self.name)} is a sparse file")
        if self.type not in _META_TYPES:
            return self._proceed(tarfile_)
        if self.size > MAX_META:
            raise ArchiveInvalid(f"an extended header of {self.size} bytes is too large")
        if self.type == tarfile.XGLTYPE and len(tarfile_.pax_headers) > MAX_GLOBAL_KEYS:
            raise ArchiveInvalid("the archive has too many global pax records")
        archive = cast(_Archive, tarfile_)
        archive.nested_headers += 1
        try:
            if archive.nested_headers > MAX_NESTED_HEADERS:
                raise ArchiveInvalid("the archive chains too many extended headers")
            return self._proceed(tarfile_)
        finally:
            archive.nested_headers -= 1

    def _proceed(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        return cast(tarfile.TarInfo, super()._proc_member(tarfile_))  # type: ignore[misc]

    def _proc_gnusparse_00(self, *args: object) -> None:
        raise ArchiveInvalid("sparse files are not accepted")

    _proc_gnusparse_01 = _proc_gnusparse_10 = _proc_gnusparse_00


def _show(name: str) -> str:
    shown = repr(name)
    return shown if len(shown) <= 120 else shown[:117] + "..."


class _Paths:
    """The paths seen so far (as digests, so memory follows the member cap)."""

    def __init__(self, max_members: int) -> None:
        self._files: set[bytes] = set()
        self._dirs: set[bytes] = set()
        self._max = max_members

    @staticmethod
    def _key(path: str) -> bytes:
        return hashlib.blake2b(path.encode(), digest_size=16).digest()

    def _count(self) -> None:
        if len(self._files) + len(self._dirs) >= self._max:
            raise ArchiveTooLarge(f"the archive holds more than {self._max} files and directories")

    def add(self, name: str, is_dir: bool, shown: str) -> None:
        """Record the normalised ``name`` (``shown``: as the archive spells it)."""
        key = self._key(name)
        if key in self._files or (key in self._dirs and not is_dir):
            raise ArchiveInvalid(f"archive member {shown} appears twice")
        parts = name.split("/")
        for depth in range(len(parts) - 1, 0, -1):
            parent = self._key("/".join(parts[:depth]))
            if parent in self._files:
                raise ArchiveInvalid(f"archive member {shown} is inside a file")
            if parent in self._dirs:
                break
            self._count()
            self._dirs.add(parent)
        if is_dir:
            if key not in self._dirs:
                self._count()
                self._dirs.add(key)
        else:
            self._count()
            self._files.add(key)


def _checked_name(member: tarfile.TarInfo) -> str | None:
    """The member's normalised relative path (None for the archive's root), or an error."""
    raw = member.name
    shown = _show(raw)
    try:
        encoded = raw.encode("utf-8")
    except UnicodeEncodeError:
        raise ArchiveInvalid(f"archive member {shown} has a name that is not UTF-8") from None
    if raw.startswith("/"):
        raise ArchiveInvalid(f"archive member {shown} has an absolute path")
    parts = [part for part in raw.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ArchiveInvalid(f"archive member {shown} climbs out of the workspace ('..')")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in raw):
        raise ArchiveInvalid(f"archive member {shown} has a control character in its name")
    too_long = any(len(part.encode()) > MAX_NAME_BYTES for part in parts)
    if len(encoded) > MAX_PATH_BYTES or len(parts) > MAX_DEPTH or too_long:
        raise ArchiveInvalid(f"archive member {shown} has too long a path")
    if not parts:
        if member.isdir():
            return None
        raise ArchiveInvalid(f"archive member {shown} has no name")
    return "/".join(parts)


def _check_kind(member: tarfile.TarInfo, shown: str) -> None:
    if member.issym():
        raise ArchiveInvalid(f"archive member {shown} is a symbolic link; links are not accepted")
    if member.islnk():
        raise ArchiveInvalid(f"archive member {shown} is a hard link; links are not accepted")
    if member.ischr() or member.isblk():
        raise ArchiveInvalid(f"archive member {shown} is a device")
    if member.isfifo():
        raise ArchiveInvalid(f"archive member {shown} is a fifo")
    if member.sparse is not None:
        raise ArchiveInvalid(f"archive member {shown} is a sparse file")
    if not (member.isreg() or member.isdir()):
        raise ArchiveInvalid(f"archive member {shown} has an unsupported type {member.type!r}")
    for bit, what in ((0o4000, "setuid"), (0o2000, "setgid"), (0o1000, "sticky")):
        if member.mode & bit:
            raise ArchiveInvalid(f"archive member {shown} has the {what} bit")


def _contents(tar: tarfile.TarFile, member: tarfile.TarInfo) -> Iterator[bytes]:
    handle = tar.extractfile(member)
    if handle is None:  # pragma: no cover - regular files always have contents
        raise ArchiveInvalid(f"archive member {_show(member.name)} has no contents")
    with handle:
        while chunk := handle.read(_STEP):
            yield chunk


def _members(source: _Gunzip, writer: TarGzWriter, limits: UploadLimits) -> Iterator[bytes]:
    tar = _Archive.open(fileobj=cast(IO[bytes], source), mode="r|", tarinfo=_Member)
    paths = _Paths(limits.max_members)
    for count, member in enumerate(tar, 1):
        if count > limits.max_members:  # repeated directories and roots count here too
            raise ArchiveTooLarge(f"the archive has more than {limits.max_members} members")
        name, shown = _checked_name(member), _show(member.name)
        _check_kind(member, shown)
        if name is None:
            continue
        paths.add(name, member.isdir(), shown)
        if member.isdir():
            if out := writer.directory(name, mtime=member.mtime):
                yield out
            continue
        executable = bool(member.mode & 0o111)
        chunks = _contents(tar, member)
        yield from writer.file(name, member.size, chunks, executable=executable, mtime=member.mtime)
    source.drain()


def normalise_upload(chunks: Iterable[bytes], limits: UploadLimits) -> Iterator[bytes]:
    """The normalised tar.gz of an uploaded one, checked as it streams (module docstring)."""
    source = _Gunzip(chunks, limits)
    writer = TarGzWriter()
    try:
        yield from _members(source, writer, limits)
    except (tarfile.TarError, EOFError, zlib.error, ValueError, UnicodeError) as exc:
        raise ArchiveInvalid(f"not a valid .tar.gz ({exc})") from None
    yield writer.close()
