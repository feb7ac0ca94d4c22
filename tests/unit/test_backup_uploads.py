"""Uploaded workspace archives are hostile: each bad one is refused by name and stores nothing."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import tracemalloc
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest

from clawhq.backups import Download, LocalStore, UploadLimits, import_upload
from clawhq.backups.archive import TarGzWriter
from clawhq.crypto import Keyring
from clawhq.errors import ArchiveInvalid, ArchiveTooLarge, ClawHQError
from clawhq.settings import load_settings

RING = Keyring(bytes(range(32)))
LIMITS = UploadLimits(max_compressed=1024**2, max_unpacked=4 * 1024**2, max_members=50)
Member = tuple[tarfile.TarInfo, bytes]


def entry(name: str, data: bytes = b"", **fields: object) -> Member:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    for field, value in fields.items():
        setattr(info, field, value)
    return info, data


def tar_bytes(*members: Member, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return out.getvalue()


def targz(*members: Member, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    return gzip.compress(tar_bytes(*members, fmt=fmt))


def pieces(data: bytes, size: int = 7000) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def upload(store: LocalStore, data: Iterable[bytes], limits: UploadLimits = LIMITS) -> bytes:
    record = import_upload(store, "u/a/up.clawbk", RING, "up", data, limits)
    return b"".join(Download(store, record.key, RING, "up", expected_sha256=record.sha256))


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if not p.is_dir())


def long_name_chain(links: int) -> bytes:
    raw = b""
    for _ in range(links):
        info = tarfile.TarInfo("././@LongLink")
        info.type, info.size = tarfile.GNUTYPE_LONGNAME, 600
        raw += info.tobuf(tarfile.GNU_FORMAT) + b"n" * 600 + bytes(-600 % 512)
    return gzip.compress(raw + tar_bytes(entry("file", b"x"), fmt=tarfile.GNU_FORMAT))


def after_the_end(extra: bytes) -> bytes:
    return gzip.compress(tar_bytes(entry("a", b"x")) + extra)


def sparse_pax() -> bytes:
    info, data = entry("s", b"x" * 10)
    info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": "s"}
    return targz((info, data))


def gnu_sparse() -> bytes:
    info, _ = entry("s")
    info.type = tarfile.GNUTYPE_SPARSE
    return gzip.compress(info.tobuf(tarfile.GNU_FORMAT) + bytes(1024))


def huge_pax_header() -> bytes:
    info, data = entry("a", b"x")
    info.pax_headers = {"comment": "c" * 300_000}
    return targz((info, data))


HOSTILE: dict[str, tuple[Callable[[], bytes], type[ClawHQError], str]] = {
    "absolute path": (lambda: targz(entry("/etc/cron.d/x", b"x")), ArchiveInvalid, "absolute"),
    "dot-dot": (lambda: targz(entry("../x", b"x")), ArchiveInvalid, r"'\.\./x'.*'\.\.'"),
    "inner dot-dot": (lambda: targz(entry("a/../../x", b"x")), ArchiveInvalid, r"\.\."),
    "symlink": (
        lambda: targz(entry("link", type=tarfile.SYMTYPE, linkname="/etc/passwd")),
        ArchiveInvalid,
        "'link' is a symbolic link",
    ),
    "hardlink": (
        lambda: targz(entry("a", b"x"), entry("b", type=tarfile.LNKTYPE, linkname="a")),
        ArchiveInvalid,
        "'b' is a hard link",
    ),
    "char device": (
        lambda: targz(entry("null", type=tarfile.CHRTYPE, devmajor=1, devminor=3)),
        ArchiveInvalid,
        "'null' is a device",
    ),
    "block device": (
        lambda: targz(entry("sda", type=tarfile.BLKTYPE, devmajor=8, devminor=0)),
        ArchiveInvalid,
        "'sda' is a device",
    ),
    "fifo": (lambda: targz(entry("p", type=tarfile.FIFOTYPE)), ArchiveInvalid, "'p' is a fifo"),
    "setuid file": (
        lambda: targz(entry("sh", b"#!", mode=0o4755)),
        ArchiveInvalid,
        "'sh' has the setuid bit",
    ),
    "setgid directory": (
        lambda: targz(entry("d", type=tarfile.DIRTYPE, mode=0o2755)),
        ArchiveInvalid,
        "setgid",
    ),
    "sticky directory": (
        lambda: targz(entry("t", type=tarfile.DIRTYPE, mode=0o1777)),
        ArchiveInvalid,
        "sticky",
    ),
    "control character": (lambda: targz(entry("a\nb", b"x")), ArchiveInvalid, "control"),
    "duplicate file": (
        lambda: targz(entry("a", b"1"), entry("./a", b"2")),
        ArchiveInvalid,
        "'./a' appears twice",
    ),
    "inside a file": (
        lambda: targz(entry("a", b"1"), entry("a/b", b"2")),
        ArchiveInvalid,
        "inside a file",
    ),
    "gnu sparse": (gnu_sparse, ArchiveInvalid, "sparse"),
    "pax sparse": (sparse_pax, ArchiveInvalid, "sparse"),
    "huge pax header": (huge_pax_header, ArchiveInvalid, "extended header"),
    "chained long names": (lambda: long_name_chain(6), ArchiveInvalid, "chains"),
    "not gzip": (lambda: tar_bytes(entry("a", b"x")), ArchiveInvalid, "not gzip-compressed"),
    "random bytes": (lambda: b"\0" + os.urandom(5000), ArchiveInvalid, "not gzip-compressed"),
    "gzip of text": (lambda: gzip.compress(b"hello " * 200), ArchiveInvalid, "header"),
    "truncated gzip": (
        lambda: targz(entry("a", os.urandom(5000)))[:2000],
        ArchiveInvalid,
        "truncated",
    ),
    "bad gzip checksum": (
        lambda: targz(entry("a", b"x"))[:-8] + b"\0\0\0\0" + targz(entry("a", b"x"))[-4:],
        ArchiveInvalid,
        "gzip stream is corrupt",
    ),
    "garbage after gzip": (
        lambda: targz(entry("a", b"x")) + b"junk",
        ArchiveInvalid,
        "data after its gzip stream",
    ),
    "data after the tar": (lambda: after_the_end(b"\1" * 512), ArchiveInvalid, "after its end"),
    "empty upload": (lambda: b"", ArchiveInvalid, "empty"),
    "empty gzip": (lambda: gzip.compress(b""), ArchiveInvalid, "end-of-archive"),
    "too big compressed": (
        lambda: targz(entry("noise", os.urandom(2 * 1024**2))),
        ArchiveTooLarge,
        "upload is over 1048576 bytes",
    ),
    "too big unpacked": (
        lambda: targz(entry("zeros", bytes(8 * 1024**2))),
        ArchiveTooLarge,
        "unpacks to over 4194304 bytes",
    ),
    "too many members": (
        lambda: targz(*(entry(f"f{i}", b"x") for i in range(60))),
        ArchiveTooLarge,
        "more than 50 members",
    ),
    "too many repeated directories": (
        lambda: targz(*(entry("./", type=tarfile.DIRTYPE, mode=0o755) for _ in range(60))),
        ArchiveTooLarge,
        "more than 50 members",
    ),
    "too many implied directories": (
        lambda: targz(entry("/".join(f"d{i}" for i in range(60)) + "/f", b"x")),
        ArchiveTooLarge,
        "more than 50 files and directories",
    ),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_a_hostile_upload_is_refused_and_stores_nothing(tmp_path: Path, case: str) -> None:
    build, error, message = HOSTILE[case]
    store = LocalStore(tmp_path / "store")
    store.write("u/a/kept.clawbk", [b"an earlier backup"])
    with pytest.raises(error, match=message) as caught:
        upload(store, pieces(build()))
    assert caught.value.status == (413 if error is ArchiveTooLarge else 400)
    assert caught.value.code == (
        "archive_too_large" if error is ArchiveTooLarge else "archive_invalid"
    )
    assert files_under(tmp_path / "store") == ["u/a/kept.clawbk"]


def test_an_upload_is_normalised(tmp_path: Path) -> None:
    run, _ = entry("./tools/run.sh", b"#!/bin/sh\n", mode=0o700, uid=0, gid=0, uname="root")
    run.pax_headers = {"SCHILY.xattr.security.capability": "\x01\x00\x00\x02"}
    long = "deep/" + "n" * 150 + ".txt"
    plain = upload(
        LocalStore(tmp_path),
        pieces(
            targz(
                entry("./", type=tarfile.DIRTYPE, mode=0o777),
                entry("./tools/", type=tarfile.DIRTYPE, mode=0o700),
                (run, b"#!/bin/sh\n"),
                entry(long, b"long name", mode=0o600, mtime=1_700_000_000),
            )
        ),
    )
    with tarfile.open(fileobj=io.BytesIO(plain), mode="r:gz") as tar:
        members = {m.name: m for m in tar}
        assert list(members) == ["tools", "tools/run.sh", long]
        for member in members.values():
            assert (member.uid, member.gid, member.uname, member.gname) == (1001, 1001, "", "")
            assert not any(key.startswith("SCHILY") for key in member.pax_headers)
        assert members["tools"].mode == 0o755 and members["tools/run.sh"].mode == 0o755
        assert members[long].mode == 0o644 and members[long].mtime == 1_700_000_000
        handle = tar.extractfile(members[long])
        assert handle is not None and handle.read() == b"long name"


def test_what_common_tools_make_is_accepted(tmp_path: Path) -> None:
    """git archive's global pax header, gzip members concatenated, zero padding at the end."""
    header = tarfile.TarInfo("pax_global_header")
    header.type, header.pax_headers = tarfile.XGLTYPE, {"comment": "0123abcd"}
    raw = header.tobuf(tarfile.PAX_FORMAT) + tar_bytes(entry("a.txt", b"alpha" * 1000))
    split = len(raw) // 2
    data = gzip.compress(raw[:split]) + gzip.compress(raw[split:] + bytes(10240))
    with tarfile.open(fileobj=io.BytesIO(upload(LocalStore(tmp_path), [data])), mode="r:gz") as tar:
        assert tar.getnames() == ["a.txt"]


def test_a_gzip_bomb_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    """1 GiB of zeros, about 1 MiB compressed: refused at the unpacked cap, never held."""

    def bomb() -> Iterator[bytes]:
        writer = TarGzWriter()
        zeros = bytes(1024**2)
        yield from writer.file("zeros", 1024**3, (zeros for _ in range(1024)))
        yield writer.close()

    store = LocalStore(tmp_path)
    limits = UploadLimits(max_compressed=2 * 1024**2, max_unpacked=64 * 1024**2, max_members=10)
    tracemalloc.start()
    try:
        with pytest.raises(ArchiveTooLarge, match="unpacks to over"):
            upload(store, bomb(), limits)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024**2
    assert files_under(tmp_path) == []


def test_a_large_upload_streams_in_bounded_memory(tmp_path: Path) -> None:
    size = 48 * 1024**2

    def archive() -> Iterator[bytes]:
        writer = TarGzWriter()
        block = os.urandom(64 * 1024)
        yield from writer.file("data.bin", size, (block for _ in range(size // len(block))))
        yield writer.close()

    store = LocalStore(tmp_path)
    limits = UploadLimits(max_compressed=size * 2, max_unpacked=size * 2, max_members=10)
    tracemalloc.start()
    try:
        record = import_upload(store, "big", RING, "big", archive(), limits)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert record.plaintext_size > size
    assert peak < 8 * 1024**2


def test_limits_come_from_the_settings() -> None:
    settings = load_settings(backup_max_upload="3g", backup_max_unpacked="5g", backup_max_members=7)
    assert UploadLimits.from_settings(settings) == UploadLimits(3 * 1024**3, 5 * 1024**3, 7)
    default = UploadLimits.from_settings(load_settings())
    assert default.max_compressed == 2 * 1024**3
