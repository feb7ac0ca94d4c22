"""Backups end to end: seal a workspace into a store, take in an upload, hand out a download,
and reseal under the key ring's current key. The controller and the API call these."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from clawhq.backups.sealing import DEFAULT_CHUNK_SIZE, BackupReader, BackupWriter, Resealed
from clawhq.backups.stores import BackupStore, Written
from clawhq.backups.uploads import UploadLimits, normalise_upload
from clawhq.crypto import Keyring
from clawhq.errors import BackupStoreUnavailable


@dataclass(frozen=True)
class BackupRecord:
    """What to remember about a stored backup (the SHA-256 is checked on every read)."""

    backup_id: str
    key: str
    size: int
    sha256: str
    plaintext_size: int
    key_id: str


def _checked(key: str, written: Written, sha256: str) -> None:
    if written.sha256 != sha256:
        raise BackupStoreUnavailable(f"the backup store kept other bytes than were sent for {key}")


def store_backup(
    store: BackupStore,
    key: str,
    keyring: Keyring,
    backup_id: str,
    plaintext: Iterable[bytes],
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> BackupRecord:
    """Seal ``plaintext`` (a tar.gz stream) and store it under ``key``; if the stream raises,
    the store keeps nothing and the error propagates."""
    writer = BackupWriter(keyring, backup_id, plaintext, chunk_size=chunk_size)
    written = store.write(key, writer)
    _checked(key, written, writer.sha256)
    return BackupRecord(
        backup_id, key, written.size, written.sha256, writer.plaintext_size, writer.header.key_id
    )


def import_upload(
    store: BackupStore,
    key: str,
    keyring: Keyring,
    backup_id: str,
    upload: Iterable[bytes],
    limits: UploadLimits,
) -> BackupRecord:
    """A user's uploaded tar.gz, checked and normalised as it streams, stored as a new backup.
    A bad archive raises ``archive_invalid`` (400) or ``archive_too_large`` (413), and nothing
    is stored."""
    return store_backup(store, key, keyring, backup_id, normalise_upload(upload, limits))


class Download:
    """The plain tar.gz of a stored backup, streamed once and closed at its end (or by
    :meth:`close`). Opening it checks the header and the data key, so a missing or foreign
    backup fails before the first byte; later corruption raises while iterating."""

    def __init__(
        self,
        store: BackupStore,
        key: str,
        keyring: Keyring,
        backup_id: str,
        *,
        expected_sha256: str | None = None,
    ) -> None:
        self._stack = contextlib.ExitStack()
        try:
            source = self._stack.enter_context(store.open(key))
            self._reader = BackupReader(source, keyring, backup_id, expected_sha256=expected_sha256)
        except BaseException:
            self._stack.close()
            raise

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._reader
        finally:
            self.close()

    def close(self) -> None:
        self._stack.close()


def reseal_backup(
    store: BackupStore,
    key: str,
    keyring: Keyring,
    backup_id: str,
    *,
    expected_sha256: str | None = None,
) -> BackupRecord | None:
    """Rewrite the backup with its data key sealed under the current key (None when it
    already is). Every chunk is verified on the way; a corrupt backup is left as it was."""
    with store.open(key) as source:
        resealed = Resealed(source, keyring, backup_id, expected_sha256=expected_sha256)
        if resealed.previous_key_id == keyring.current_key_id:
            return None
        written = store.write(key, resealed)
    _checked(key, written, resealed.sha256)
    plain_size, key_id = resealed.plaintext_size, resealed.header.key_id
    return BackupRecord(backup_id, key, written.size, written.sha256, plain_size, key_id)
