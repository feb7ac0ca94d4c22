"""Where sealed backups are kept: the :class:`BackupStore` interface and its local directory.

A store holds opaque objects under keys such as ``<user>/<agent>/<backup>.clawbk``; it never
sees plaintext. Writes are all or nothing: the stream is written aside and published only
once it ended well, so an upload that fails its checks halfway leaves nothing behind.
:func:`store_from_settings` picks :class:`LocalStore` (``CLAWHQ_BACKUP_DIR``) or, with
``CLAWHQ_BACKUP_S3_BUCKET``, :class:`clawhq.backups.s3.S3Store`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from clawhq.backups.sealing import Readable
from clawhq.errors import BackupNotFound, BackupStoreUnavailable
from clawhq.settings import Settings

MAX_KEY_LENGTH = 512
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def check_key(key: str) -> str:
    """``key`` if it is a valid store key: ``/``-separated parts of ``A-Za-z0-9._-``, each
    starting with a letter or digit (so no ``..``, no hidden or absolute paths)."""
    if len(key) > MAX_KEY_LENGTH or not _KEY.match(key):
        raise ValueError(f"not a backup store key: {key!r}")
    return key


@dataclass(frozen=True)
class Written:
    """What a write stored: its size and the hex SHA-256 of its bytes."""

    size: int
    sha256: str


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int


class BackupStore(Protocol):
    """A place for sealed backups. Every method raises
    :class:`~clawhq.errors.BackupStoreUnavailable` when the store itself fails."""

    def write(self, key: str, chunks: Iterable[bytes]) -> Written:
        """Store ``chunks`` under ``key`` (replacing what was there) once they all arrived;
        if the iteration raises, nothing is stored and the error propagates."""
        ...

    def open(self, key: str) -> AbstractContextManager[Readable]:
        """The object's bytes to read (:class:`~clawhq.errors.BackupNotFound` if none)."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object; a missing one is no error."""
        ...

    def list(self, prefix: str = "") -> list[StoredObject]:
        """The objects whose key starts with ``prefix``, sorted by key."""
        ...

    def exists(self, key: str) -> bool: ...


class LocalStore:
    """Backups as files under one directory (mode 0700; files 0600, fsynced, published by
    rename from a hidden ``.part`` file that listings skip)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        path = self.root / check_key(key)
        root = self.root.resolve()
        if not path.parent.resolve().is_relative_to(root):
            raise ValueError(f"backup store key {key!r} leads out of {root}")
        return path

    def _make_dirs(self, folder: Path) -> None:
        """``folder`` and any missing parent up to the root, each mode 0700 (``mkdir -p``
        gives the parents the umask's mode)."""
        missing = []
        while not folder.is_dir():
            missing.append(folder)
            folder = folder.parent
        for path in reversed(missing):
            path.mkdir(mode=0o700, exist_ok=True)

    def write(self, key: str, chunks: Iterable[bytes]) -> Written:
        path = self._path(key)
        digest, size = hashlib.sha256(), 0
        try:
            self._make_dirs(path.parent)
            temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.part")
            fd = os.open(temp, _WRITE_FLAGS, 0o600)
        except OSError as exc:
            raise BackupStoreUnavailable(f"cannot write backup {key}: {exc}") from exc
        try:
            with os.fdopen(fd, "wb") as handle:
                for chunk in chunks:
                    digest.update(chunk)
                    size += len(chunk)
                    handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, path)
            _fsync_dir(path.parent)
        except BaseException as exc:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
            if isinstance(exc, OSError):
                raise BackupStoreUnavailable(f"cannot write backup {key}: {exc}") from exc
            raise
        return Written(size, digest.hexdigest())

    @contextlib.contextmanager
    def open(self, key: str) -> Iterator[Readable]:
        path = self._path(key)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise BackupNotFound(f"no backup is stored under {key}") from None
        except OSError as exc:
            raise BackupStoreUnavailable(f"cannot read backup {key}: {exc}") from exc
        with os.fdopen(fd, "rb") as handle:
            yield _LocalReadable(handle, key)

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise BackupStoreUnavailable(f"cannot delete backup {key}: {exc}") from exc
        folder = path.parent
        while folder != self.root and folder.is_relative_to(self.root):
            try:
                folder.rmdir()  # empty folders go with their last backup
            except OSError:
                break
            folder = folder.parent

    def list(self, prefix: str = "") -> list[StoredObject]:
        found = []
        try:
            for folder, dirs, files in os.walk(self.root):
                dirs[:] = [name for name in dirs if not name.startswith(".")]
                base = Path(folder)
                for name in files:
                    if name.startswith("."):
                        continue
                    key = (base / name).relative_to(self.root).as_posix()
                    if key.startswith(prefix):
                        found.append(StoredObject(key, (base / name).lstat().st_size))
        except OSError as exc:
            raise BackupStoreUnavailable(f"cannot list backups: {exc}") from exc
        return sorted(found, key=lambda stored: stored.key)

    def exists(self, key: str) -> bool:
        path = self._path(key)
        return path.is_file() and not path.is_symlink()


class _LocalReadable:
    def __init__(self, handle: BinaryIO, key: str) -> None:
        self._handle = handle
        self._key = key

    def read(self, size: int, /) -> bytes:
        try:
            return self._handle.read(size)
        except OSError as exc:
            raise BackupStoreUnavailable(f"cannot read backup {self._key}: {exc}") from exc


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def store_from_settings(settings: Settings) -> BackupStore:
    """The S3 store when ``CLAWHQ_BACKUP_S3_BUCKET`` is set, else the local directory
    ``CLAWHQ_BACKUP_DIR`` (default ``CLAWHQ_DATA_DIR/backups``)."""
    if settings.backup_s3_bucket:
        from clawhq.backups.s3 import S3Store  # boto3 loads only when a bucket is used

        secret = settings.backup_s3_secret_access_key
        return S3Store(
            settings.backup_s3_bucket,
            endpoint=settings.backup_s3_endpoint,
            region=settings.backup_s3_region,
            access_key_id=settings.backup_s3_access_key_id,
            secret_access_key=secret.get_secret_value() if secret is not None else None,
        )
    return LocalStore(settings.backup_dir or settings.data_dir / "backups")
