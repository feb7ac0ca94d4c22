"""The sealed backup format, version 1: a header, AES-256-GCM chunks, a SHA-256 trailer.

    header   "CLAWHQBK" | version u8 = 1 | chunk size u32 | id length u8 | backup id (ASCII)
             | key id length u8 | key id (ASCII) | sealed length u16 | sealed data key
    frame    flag u8 (0 more, 1 final) | length u32 | ciphertext and its 16-byte GCM tag
    trailer  the SHA-256 of every byte before it

Integers are big-endian. The plaintext (a tar.gz) is cut into ``chunk size`` pieces, the last
one shorter or empty, each encrypted under a random data key of the backup alone. A chunk's
nonce is its index and its flag, its associated data the header up to the key id (the magic,
version, chunk size and backup id), so a reordered, dropped, spliced or truncated chunk fails
its tag. The data key is sealed by :class:`clawhq.crypto.Keyring` under the context
``backup:<id>:key``: rotating the key ring covers it (:class:`Resealed`). docs/backups.md has
the threat model.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from clawhq.crypto import DecryptionError, Keyring, Sealed
from clawhq.errors import BackupCorrupt

MAGIC = b"CLAWHQBK"
VERSION = 1
TAG_BYTES = 16
DIGEST_BYTES = 32
DEFAULT_CHUNK_SIZE = 1024**2
MIN_CHUNK_SIZE = 1024
MAX_CHUNK_SIZE = 16 * 1024**2
MAX_SEALED_KEY = 1024

_BACKUP_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_MORE, _FINAL = 0, 1
_FRAME = struct.Struct(">BI")


class Readable(Protocol):
    """What a backup is read from: a file, an S3 body (``read`` may return less than asked)."""

    def read(self, size: int, /) -> bytes: ...


def key_context(backup_id: str) -> str:
    """The key ring context a backup's data key is sealed under."""
    return f"backup:{backup_id}:key"


def check_backup_id(backup_id: str) -> str:
    """``backup_id`` if it is 1-128 characters of ``A-Za-z0-9._-``, not starting with a dot."""
    if not _BACKUP_ID.match(backup_id):
        raise ValueError(f"not a backup id: {backup_id!r}")
    return backup_id


@dataclass(frozen=True)
class BackupHeader:
    """The header of a sealed backup."""

    backup_id: str
    chunk_size: int
    key_id: str
    sealed_key: bytes

    @property
    def core(self) -> bytes:
        """The authenticated part (every chunk's associated data): magic to backup id."""
        ident = self.backup_id.encode("ascii")
        return MAGIC + struct.pack(">BIB", VERSION, self.chunk_size, len(ident)) + ident

    def encode(self) -> bytes:
        kid = self.key_id.encode("ascii")
        sealed = struct.pack(">H", len(self.sealed_key)) + self.sealed_key
        return self.core + struct.pack(">B", len(kid)) + kid + sealed


def _read_exact(source: Readable, size: int) -> bytes:
    data = source.read(size)
    if len(data) == size:
        return data
    parts = bytearray(data)
    while len(parts) < size:
        more = source.read(size - len(parts))
        if not more:
            raise BackupCorrupt("the backup is truncated")
        parts += more
    return bytes(parts)


def read_header(source: Readable) -> tuple[BackupHeader, bytes]:
    """The header at the start of ``source`` and its bytes; nothing in it is authenticated yet
    (the key ring and the first chunk do that: :class:`BackupReader`)."""
    raw = bytearray()

    def take(size: int) -> bytes:
        data = _read_exact(source, size)
        raw.extend(data)
        return data

    if take(len(MAGIC)) != MAGIC:
        raise BackupCorrupt("not a ClawHQ backup (wrong magic)")
    version, chunk_size, id_length = struct.unpack(">BIB", take(6))
    if version != VERSION:
        raise BackupCorrupt(f"backup format version {version} is not supported")
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise BackupCorrupt(f"the backup's chunk size {chunk_size} is out of range")
    try:
        backup_id = check_backup_id(take(id_length).decode("ascii"))
        key_id = take(take(1)[0]).decode("ascii")
    except (UnicodeDecodeError, ValueError):
        raise BackupCorrupt("the backup's header is malformed") from None
    (sealed_length,) = struct.unpack(">H", take(2))
    if sealed_length > MAX_SEALED_KEY:
        raise BackupCorrupt("the backup's header is malformed")
    sealed_key = take(sealed_length)
    return BackupHeader(backup_id, chunk_size, key_id, sealed_key), bytes(raw)


def _nonce(index: int, flag: int) -> bytes:
    return struct.pack(">3xQB", index, flag)


def _encoded_key(data_key: bytes) -> str:
    return base64.b64encode(data_key).decode("ascii")


def _open_key(keyring: Keyring, header: BackupHeader) -> bytes:
    sealed = Sealed(header.sealed_key, header.key_id)
    try:
        encoded = keyring.open(sealed, key_context(header.backup_id))
        data_key = base64.b64decode(encoded, validate=True)
    except DecryptionError as exc:
        raise BackupCorrupt(
            f"backup {header.backup_id}: its data key cannot be opened ({exc.message}); "
            "the header was tampered with, or the key that sealed it left the key ring"
        ) from None
    except (binascii.Error, ValueError):
        raise BackupCorrupt(f"backup {header.backup_id}: its data key is malformed") from None
    if len(data_key) != 32:
        raise BackupCorrupt(f"backup {header.backup_id}: its data key is malformed")
    return data_key


class _Tally:
    """Size and SHA-256 of what went by."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.size = 0

    def __call__(self, data: bytes) -> bytes:
        self.hash.update(data)
        self.size += len(data)
        return data


class _SealedStream:
    """An iterable of stored bytes, iterated once; ``size`` and ``sha256`` once it is done."""

    header: BackupHeader

    def __init__(self) -> None:
        self._tally = _Tally()
        self._started = False
        self._sha256: str | None = None

    @property
    def size(self) -> int:
        return self._tally.size

    @property
    def sha256(self) -> str:
        """The hex SHA-256 of every stored byte (what a store reports for the object)."""
        if self._sha256 is None:
            raise RuntimeError("the backup has not been streamed to its end yet")
        return self._sha256

    def __iter__(self) -> Iterator[bytes]:
        if self._started:
            raise RuntimeError("a sealed stream can be iterated once")
        self._started = True
        out = self._tally
        yield out(self.header.encode())
        yield from (out(part) for part in self._frames())
        yield out(self._tally.hash.digest())
        self._sha256 = self._tally.hash.hexdigest()

    def _frames(self) -> Iterator[bytes]:
        raise NotImplementedError


class BackupWriter(_SealedStream):
    """Seals a plaintext stream under a fresh data key; memory stays around one chunk.

    Iterate it for the bytes to store (``store.write(key, writer)``); then ``size``,
    ``sha256`` and ``plaintext_size`` are known.
    """

    def __init__(
        self,
        keyring: Keyring,
        backup_id: str,
        plaintext: Iterable[bytes],
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        super().__init__()
        if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError(f"chunk size {chunk_size} is out of range")
        data_key = AESGCM.generate_key(bit_length=256)
        sealed = keyring.seal(_encoded_key(data_key), key_context(check_backup_id(backup_id)))
        self.header = BackupHeader(backup_id, chunk_size, sealed.key_id, sealed.ciphertext)
        self._aead = AESGCM(data_key)
        self._plaintext = plaintext
        self.plaintext_size = 0

    def _seal(self, index: int, flag: int, data: bytes | bytearray | memoryview) -> Iterator[bytes]:
        body = self._aead.encrypt(_nonce(index, flag), data, self.header.core)
        yield _FRAME.pack(flag, len(body))
        yield body

    def _frames(self) -> Iterator[bytes]:
        size = self.header.chunk_size
        chunk, filled, index = bytearray(size), 0, 0
        for piece in self._plaintext:
            self.plaintext_size += len(piece)
            with memoryview(piece) as view:
                while filled + len(view) > size:
                    # The chunk is full and more data follows: it is not the final one.
                    take = size - filled
                    chunk[filled:] = view[:take]
                    view = view[take:]
                    yield from self._seal(index, _MORE, chunk)
                    filled, index = 0, index + 1
                chunk[filled : filled + len(view)] = view
                filled += len(view)
        with memoryview(chunk) as view:
            yield from self._seal(index, _FINAL, view[:filled])


class BackupReader:
    """Opens a sealed backup: iterate it for the plaintext.

    The header is checked on construction (the backup id must be ``backup_id``, the data key
    must open). Each chunk is yielded only once its tag is verified; the final one only once
    the trailer, the end of the stream and ``expected_sha256`` (the hex digest of all the
    stored bytes, as recorded when it was written) are too. Any mismatch raises
    :class:`~clawhq.errors.BackupCorrupt`; a consumer keeps nothing until the iteration ends.
    """

    def __init__(
        self,
        source: Readable,
        keyring: Keyring,
        backup_id: str,
        *,
        expected_sha256: str | None = None,
    ) -> None:
        self._source = source
        self._tally = _Tally()
        self.header, raw = read_header(source)
        self._tally(raw)
        if self.header.backup_id != backup_id:
            raise BackupCorrupt(f"the stored backup is {self.header.backup_id}, not {backup_id}")
        self._data_key = _open_key(keyring, self.header)
        self._aead = AESGCM(self._data_key)
        self._expected = expected_sha256.lower() if expected_sha256 is not None else None
        self.plaintext_size = 0
        self._started = False

    @property
    def size(self) -> int:
        """The stored bytes read so far (all of them once the iteration is done)."""
        return self._tally.size

    def __iter__(self) -> Iterator[bytes]:
        for frame in self.frames():
            plain = frame[2]
            del frame  # hold no ciphertext while the next chunk is read
            if plain:
                yield plain
            del plain

    def frames(self) -> Iterator[tuple[bytes, bytes, bytes]]:
        """Each frame as stored (its prefix and body) with its authenticated plaintext."""
        if self._started:
            raise RuntimeError("a backup can be read once")
        self._started = True
        limit = self.header.chunk_size + TAG_BYTES
        index = 0
        while True:
            prefix = _read_exact(self._source, _FRAME.size)
            flag, length = _FRAME.unpack(prefix)
            if flag not in (_MORE, _FINAL) or not TAG_BYTES <= length <= limit:
                raise BackupCorrupt(f"chunk {index} of the backup has a malformed frame")
            if flag == _MORE and length != limit:
                raise BackupCorrupt(f"chunk {index} of the backup has a malformed frame")
            body = _read_exact(self._source, length)
            try:
                plain = self._aead.decrypt(_nonce(index, flag), body, self.header.core)
            except InvalidTag:
                raise BackupCorrupt(
                    f"chunk {index} of the backup fails authentication "
                    "(tampered with, reordered, or from another backup)"
                ) from None
            self._tally(prefix)
            self._tally(body)
            self.plaintext_size += len(plain)
            if flag == _FINAL:
                self._check_end()
                yield prefix, body, plain
                return
            yield prefix, body, plain
            del body, plain  # only one chunk at a time
            index += 1

    def _check_end(self) -> None:
        digest = self._tally.hash.digest()
        trailer = _read_exact(self._source, DIGEST_BYTES)
        if not hmac.compare_digest(trailer, digest):
            raise BackupCorrupt("the backup's checksum does not match its contents")
        self._tally(trailer)
        if self._source.read(1):
            raise BackupCorrupt("the backup has data after its end")
        actual = self._tally.hash.hexdigest()
        if self._expected is not None and not hmac.compare_digest(actual, self._expected):
            raise BackupCorrupt(
                f"the stored backup's SHA-256 is {actual}, not the recorded {self._expected}"
            )


class Resealed(_SealedStream):
    """A backup with its data key sealed again under the key ring's current key.

    The chunks are authenticated and copied as they are, between a new header and trailer: the
    stored bytes (and so their SHA-256) change, the plaintext does not. Iterate it into the
    store; if the old backup fails a check, the iteration raises and the store keeps the old.
    """

    def __init__(
        self,
        source: Readable,
        keyring: Keyring,
        backup_id: str,
        *,
        expected_sha256: str | None = None,
    ) -> None:
        super().__init__()
        self._reader = BackupReader(source, keyring, backup_id, expected_sha256=expected_sha256)
        self.previous_key_id = self._reader.header.key_id
        sealed = keyring.seal(_encoded_key(self._reader._data_key), key_context(backup_id))
        self.header = replace(
            self._reader.header, key_id=sealed.key_id, sealed_key=sealed.ciphertext
        )

    @property
    def plaintext_size(self) -> int:
        return self._reader.plaintext_size

    def _frames(self) -> Iterator[bytes]:
        for prefix, body, _plain in self._reader.frames():
            yield prefix
            yield body
