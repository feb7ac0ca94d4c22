"""The sealed backup format: round trips, and every way a stored backup can be spoiled."""

from __future__ import annotations

import io
import os
import tarfile
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from clawhq.backups import LocalStore, reseal_backup, store_backup
from clawhq.backups.archive import directory_archive
from clawhq.backups.operations import Download
from clawhq.backups.sealing import (
    MIN_CHUNK_SIZE,
    TAG_BYTES,
    BackupReader,
    BackupWriter,
    Resealed,
    read_header,
)
from clawhq.crypto import Keyring
from clawhq.errors import BackupCorrupt

KEY_A = bytes(range(32))
KEY_B = bytes(range(32, 64))
CHUNK = MIN_CHUNK_SIZE


def seal(data: bytes, backup_id: str = "b1", ring: Keyring | None = None) -> bytes:
    writer = BackupWriter(ring or Keyring(KEY_A), backup_id, [data], chunk_size=CHUNK)
    return b"".join(writer)


def unseal(
    stored: bytes, backup_id: str = "b1", ring: Keyring | None = None, sha: str | None = None
) -> bytes:
    reader = BackupReader(
        io.BytesIO(stored), ring or Keyring(KEY_A), backup_id, expected_sha256=sha
    )
    return b"".join(reader)


def frames(stored: bytes) -> tuple[bytes, list[bytes], bytes]:
    """The header, each frame and the trailer of a stored backup (CHUNK-sized chunks)."""
    _, raw = read_header(io.BytesIO(stored))
    at, out = len(raw), []
    while True:
        length = int.from_bytes(stored[at + 1 : at + 5], "big")
        out.append(stored[at : at + 5 + length])
        final = stored[at] == 1
        at += 5 + length
        if final:
            return raw, out, stored[at:]


def test_a_directory_round_trips_to_the_same_files(tmp_path: Path) -> None:
    (tmp_path / "src" / "notes").mkdir(parents=True)
    (tmp_path / "src" / "notes" / "known.txt").write_bytes(b"the known contents\n")
    (tmp_path / "src" / "big.bin").write_bytes(os.urandom(3 * CHUNK + 17))
    os.symlink("/etc/passwd", tmp_path / "src" / "link")  # left out: not a regular file
    store = LocalStore(tmp_path / "store")
    ring = Keyring(KEY_A)

    record = store_backup(
        store, "u/a/b1.clawbk", ring, "b1", directory_archive(tmp_path / "src"), chunk_size=CHUNK
    )
    assert record.size == (tmp_path / "store/u/a/b1.clawbk").stat().st_size
    assert record.key_id == ring.current_key_id
    stored = (tmp_path / "store/u/a/b1.clawbk").read_bytes()
    assert b"the known contents" not in stored
    plain = b"".join(Download(store, record.key, ring, "b1", expected_sha256=record.sha256))
    assert len(plain) == record.plaintext_size

    with tarfile.open(fileobj=io.BytesIO(plain), mode="r:gz") as tar:
        names = tar.getnames()
        known = tar.getmember("notes/known.txt")
        assert (known.uid, known.gid, known.mode) == (1001, 1001, 0o644)
        handle = tar.extractfile(known)
        assert handle is not None and handle.read() == b"the known contents\n"
    assert sorted(names) == ["big.bin", "notes", "notes/known.txt"]


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK])
def test_any_length_round_trips(size: int) -> None:
    data = os.urandom(size)
    stored = seal(data)
    assert unseal(stored) == data
    _, parts, trailer = frames(stored)
    assert len(parts) == max(1, -(-size // CHUNK)) and len(trailer) == 32


def test_the_writer_reports_what_the_store_keeps(tmp_path: Path) -> None:
    writer = BackupWriter(Keyring(KEY_A), "b1", [b"x" * 5000, b"y" * 10], chunk_size=CHUNK)
    written = LocalStore(tmp_path).write("b1", writer)
    assert (written.size, written.sha256) == (writer.size, writer.sha256)
    assert writer.plaintext_size == 5010
    with pytest.raises(RuntimeError):
        list(writer)  # streamed once


def test_tampering_with_any_single_byte_is_refused() -> None:
    stored = seal(os.urandom(2 * CHUNK + 100))
    for position in range(len(stored)):
        spoiled = bytearray(stored)
        spoiled[position] ^= 0x01
        with pytest.raises(BackupCorrupt):
            unseal(bytes(spoiled))


def test_every_truncation_and_any_extra_byte_is_refused() -> None:
    stored = seal(os.urandom(2 * CHUNK + 100))
    for length in range(len(stored)):
        with pytest.raises(BackupCorrupt):
            unseal(stored[:length])
    with pytest.raises(BackupCorrupt, match="after its end"):
        unseal(stored + b"\0")


def test_plaintext_is_yielded_only_once_authenticated() -> None:
    data = os.urandom(3 * CHUNK)
    stored = bytearray(seal(data))
    stored[-1] ^= 0x01  # the trailer: found only at the end
    reader = iter(BackupReader(io.BytesIO(bytes(stored)), Keyring(KEY_A), "b1"))
    assert next(reader) + next(reader) == data[: 2 * CHUNK]
    with pytest.raises(BackupCorrupt, match="checksum"):
        next(reader)  # the final chunk is held back until the trailer is checked


def test_chunks_cannot_be_swapped_reordered_or_spliced() -> None:
    one, two = os.urandom(3 * CHUNK), os.urandom(3 * CHUNK)
    header_a, parts_a, trailer_a = frames(seal(one, "b1"))
    header_b, parts_b, _ = frames(seal(two, "b2"))
    same_key_c = frames(seal(two, "b1"))  # another backup that happens to share the id

    spliced = header_a + parts_a[0] + parts_b[1] + parts_a[2] + trailer_a
    reordered = header_a + parts_a[1] + parts_a[0] + parts_a[2] + trailer_a
    dropped = header_a + parts_a[0] + parts_a[2] + trailer_a
    foreign_header = header_b + b"".join(parts_a) + trailer_a
    same_id = header_a + same_key_c[1][0] + b"".join(parts_a[1:]) + trailer_a
    for spoiled, backup_id in [
        (spliced, "b1"),
        (reordered, "b1"),
        (dropped, "b1"),
        (foreign_header, "b2"),
        (same_id, "b1"),
    ]:
        with pytest.raises(BackupCorrupt):
            unseal(spoiled, backup_id)


def test_a_final_chunk_marked_as_more_or_cut_early_is_refused() -> None:
    header, parts, trailer = frames(seal(os.urandom(2 * CHUNK)))
    no_end = header + parts[0] + bytes([1]) + parts[0][1:] + trailer  # first chunk flagged final
    with pytest.raises(BackupCorrupt, match="authentication"):
        unseal(no_end)


def test_a_backup_under_another_id_is_refused() -> None:
    stored = seal(b"workspace of user one", "b1")
    with pytest.raises(BackupCorrupt, match="is b1, not b2"):
        unseal(stored, "b2")


def test_the_recorded_sha256_must_match() -> None:
    writer = BackupWriter(Keyring(KEY_A), "b1", [b"data"], chunk_size=CHUNK)
    stored = b"".join(writer)
    assert unseal(stored, sha=writer.sha256.upper()) == b"data"
    with pytest.raises(BackupCorrupt, match="not the recorded"):
        unseal(stored, sha="0" * 64)


def test_a_rotated_key_ring_opens_and_reseals_old_backups(tmp_path: Path) -> None:
    old, rotated, new_only = Keyring(KEY_A), Keyring(KEY_B, (KEY_A,)), Keyring(KEY_B)
    data = os.urandom(2 * CHUNK + 5)
    store = LocalStore(tmp_path)
    record = store_backup(store, "b1", old, "b1", [data], chunk_size=CHUNK)
    stored = (tmp_path / "b1").read_bytes()

    assert unseal(stored, ring=rotated) == data
    with pytest.raises(BackupCorrupt, match="key that sealed it left the key ring"):
        unseal(stored, ring=new_only)

    resealed = reseal_backup(store, "b1", rotated, "b1", expected_sha256=record.sha256)
    assert resealed is not None and resealed.key_id == new_only.current_key_id
    assert resealed.sha256 != record.sha256 and resealed.plaintext_size == len(data)
    again = (tmp_path / "b1").read_bytes()
    assert unseal(again, ring=new_only, sha=resealed.sha256) == data
    assert frames(again)[1] == frames(stored)[1]  # the chunks are copied as they were
    assert reseal_backup(store, "b1", rotated, "b1") is None  # already under the current key


def test_resealing_a_corrupt_backup_keeps_it_as_it_was(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store_backup(store, "b1", Keyring(KEY_A), "b1", [os.urandom(3 * CHUNK)], chunk_size=CHUNK)
    spoiled = bytearray((tmp_path / "b1").read_bytes())
    spoiled[-40] ^= 0x80  # inside the last frame
    (tmp_path / "b1").write_bytes(bytes(spoiled))
    with pytest.raises(BackupCorrupt):
        reseal_backup(store, "b1", Keyring(KEY_B, (KEY_A,)), "b1")
    assert (tmp_path / "b1").read_bytes() == bytes(spoiled)
    assert [p.name for p in tmp_path.iterdir()] == ["b1"]  # no .part left behind


def test_the_header_names_the_sealing_key() -> None:
    ring = Keyring(KEY_A)
    header, raw = read_header(io.BytesIO(seal(b"x", "b-7", ring)))
    assert (header.backup_id, header.chunk_size, header.key_id) == (
        "b-7",
        CHUNK,
        ring.current_key_id,
    )
    assert raw == header.encode()
    resealed = Resealed(io.BytesIO(seal(b"x", "b-7", ring)), Keyring(KEY_B, (KEY_A,)), "b-7")
    assert resealed.previous_key_id == ring.current_key_id


def _generated(total: int, piece: int = 256 * 1024) -> Iterator[bytes]:
    block = bytes(range(256)) * (piece // 256)
    for _ in range(total // piece):
        yield block


class _Pipe:
    """A readable over an iterator of bytes (what a store's stream is, without a disk)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks, self._buffer = chunks, bytearray()

    def read(self, size: int) -> bytes:
        while len(self._buffer) < size:
            more = next(self._chunks, b"")
            if not more:
                break
            self._buffer += more
        out = bytes(self._buffer[:size])
        del self._buffer[:size]
        return out


def test_200_mb_stream_through_writer_and_reader_in_bounded_memory() -> None:
    total, chunk = 200 * 1024**2, 1024**2
    ring = Keyring(KEY_A)
    tracemalloc.start()
    try:
        writer = BackupWriter(ring, "big", _generated(total), chunk_size=chunk)
        reader = BackupReader(_Pipe(iter(writer)), ring, "big")
        seen = sum(len(plain) for plain in reader)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seen == total == reader.plaintext_size
    assert (
        reader.size
        == writer.size
        == total + 200 * (5 + TAG_BYTES) + len(writer.header.encode()) + 32
    )
    assert peak < 8 * chunk, f"peak {peak} bytes for a {total}-byte stream"
