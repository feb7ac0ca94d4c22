"""Backup stores: the local directory, and S3 against a real moto server on loopback."""

from __future__ import annotations

import io
import os
import socket
import stat
import subprocess
import sys
import tarfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest
from botocore.config import Config

from clawhq.backups import Download, LocalStore, import_upload, store_backup, store_from_settings
from clawhq.backups.archive import directory_archive
from clawhq.backups.s3 import MIN_PART_SIZE, S3Store
from clawhq.backups.stores import BackupStore, StoredObject
from clawhq.backups.uploads import UploadLimits
from clawhq.crypto import Keyring
from clawhq.errors import ArchiveInvalid, BackupNotFound, BackupStoreUnavailable
from clawhq.settings import load_settings

RING = Keyring(bytes(range(32)))


class Boom(Exception):
    pass


def failing_after(total: int, piece: int = 1024**2) -> Iterator[bytes]:
    for _ in range(total // piece):
        yield os.urandom(piece)
    raise Boom("the source failed")


def read_all(store: BackupStore, key: str) -> bytes:
    with store.open(key) as source:
        out = bytearray()
        while chunk := source.read(65536):
            out += chunk
        return bytes(out)


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy, no instance metadata service: boto3 reaches 127.0.0.1 and nothing else."""
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")


# -- the local directory ---------------------------------------------------------------------


def test_local_store_writes_reads_lists_and_deletes(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "backups")
    written = store.write("u1/a1/b1.clawbk", [b"abc", b"", b"def"])
    assert written.size == 6
    assert read_all(store, "u1/a1/b1.clawbk") == b"abcdef"
    path = tmp_path / "backups/u1/a1/b1.clawbk"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "backups/u1").stat().st_mode) == 0o700
    store.write("u1/a2/b2.clawbk", [b"x"])
    assert store.list() == [StoredObject("u1/a1/b1.clawbk", 6), StoredObject("u1/a2/b2.clawbk", 1)]
    assert [o.key for o in store.list("u1/a2/")] == ["u1/a2/b2.clawbk"]
    assert store.exists("u1/a1/b1.clawbk") and not store.exists("u1/a1/nope")
    store.delete("u1/a1/b1.clawbk")
    store.delete("u1/a1/b1.clawbk")  # idempotent
    assert not (tmp_path / "backups/u1/a1").exists()  # its empty folder went with it
    with pytest.raises(BackupNotFound):
        store.open("u1/a1/b1.clawbk").__enter__()


@pytest.mark.parametrize(
    "key", ["../x", "/etc/passwd", "a/../../x", ".hidden", "a//b", "a/.b.part", "", "a\\b", "a/"]
)
def test_local_store_keys_cannot_escape(tmp_path: Path, key: str) -> None:
    store = LocalStore(tmp_path / "backups")
    with pytest.raises(ValueError, match="not a backup store key"):
        store.write(key, [b"x"])
    assert not (tmp_path / "x").exists()


def test_local_store_does_not_follow_a_planted_symlink(tmp_path: Path) -> None:
    (tmp_path / "backups").mkdir()
    (tmp_path / "outside").mkdir()
    os.symlink(tmp_path / "outside", tmp_path / "backups" / "u1")
    with pytest.raises(ValueError, match="leads out"):
        LocalStore(tmp_path / "backups").write("u1/b", [b"x"])
    assert list((tmp_path / "outside").iterdir()) == []


def test_a_failed_local_write_leaves_nothing_and_keeps_the_old(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.write("b1", [b"old"])
    with pytest.raises(Boom):
        store.write("b1", failing_after(3 * 1024**2))
    with pytest.raises(Boom):
        store.write("b2", failing_after(1024**2))
    assert read_all(store, "b1") == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b1"]


def test_the_settings_choose_the_store(tmp_path: Path) -> None:
    local = store_from_settings(load_settings(data_dir=tmp_path))
    assert isinstance(local, LocalStore) and local.root == tmp_path / "backups"
    chosen = store_from_settings(load_settings(backup_dir=tmp_path / "elsewhere"))
    assert isinstance(chosen, LocalStore) and chosen.root == tmp_path / "elsewhere"
    s3 = store_from_settings(
        load_settings(
            backup_s3_bucket="clawhq-backups",
            backup_s3_endpoint="http://127.0.0.1:9",
            backup_s3_region="eu-west-1",
            backup_s3_access_key_id="id",
            backup_s3_secret_access_key="secret",
        )
    )
    assert isinstance(s3, S3Store) and s3.bucket == "clawhq-backups"


# -- S3, against moto's server on loopback ---------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 for this module; every client here talks to it alone."""
    with pytest.MonkeyPatch.context() as env:
        for name, value in {
            "AWS_EC2_METADATA_DISABLED": "true",  # never ask 169.254.169.254 for anything
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "NO_PROXY": "127.0.0.1",
            "no_proxy": "127.0.0.1",
        }.items():
            env.setenv(name, value)
        port = _free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        endpoint = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    httpx.get(f"{endpoint}/moto-api/", timeout=2, trust_env=False)
                    break
                except httpx.TransportError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        pytest.fail("the moto server did not start")
                    time.sleep(0.2)
            yield endpoint
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


@pytest.fixture
def bucket(s3_endpoint: str, request: pytest.FixtureRequest) -> str:
    name = "clawhq-" + str(request.node.name).lower().replace("_", "-")[:40].strip("-")
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    client.create_bucket(Bucket=name)
    return name


def s3_store(endpoint: str, bucket: str) -> S3Store:
    return S3Store(
        bucket,
        endpoint=endpoint,
        region="us-east-1",
        access_key_id="testing",
        secret_access_key="testing",
        part_size=MIN_PART_SIZE,
    )


def open_uploads(store: S3Store) -> list[object]:
    answer = store._client.list_multipart_uploads(Bucket=store.bucket)
    return list(answer.get("Uploads", []))


def test_s3_store_writes_reads_lists_and_deletes(s3_endpoint: str, bucket: str) -> None:
    store = s3_store(s3_endpoint, bucket)
    written = store.write("u1/a1/small.clawbk", [b"hello ", b"bucket"])
    assert written.size == 12
    assert read_all(store, "u1/a1/small.clawbk") == b"hello bucket"
    store.write("u1/a2/other.clawbk", [b"x"])
    assert store.list("u1/a1/") == [StoredObject("u1/a1/small.clawbk", 12)]
    assert len(store.list()) == 2
    assert store.exists("u1/a1/small.clawbk") and not store.exists("u1/a1/missing")
    store.delete("u1/a1/small.clawbk")
    store.delete("u1/a1/small.clawbk")  # idempotent
    assert not store.exists("u1/a1/small.clawbk")
    with pytest.raises(BackupNotFound), store.open("u1/a1/small.clawbk"):
        pass


def test_s3_multipart_upload_larger_than_a_part(s3_endpoint: str, bucket: str) -> None:
    store = s3_store(s3_endpoint, bucket)
    data = os.urandom(2 * MIN_PART_SIZE + 12345)  # three parts, the last one short
    tracemalloc.start()
    try:
        written = store.write(
            "big.clawbk", (data[i : i + 65536] for i in range(0, len(data), 65536))
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert written.size == len(data)
    assert read_all(store, "big.clawbk") == data
    head = store._client.head_object(Bucket=bucket, Key="big.clawbk")
    assert head["ETag"].strip('"').endswith("-3")  # a multipart object of three parts
    assert peak < 3 * MIN_PART_SIZE  # a part filling in the buffer, one being sent
    assert open_uploads(store) == []


def test_an_aborted_s3_upload_leaves_no_object(s3_endpoint: str, bucket: str) -> None:
    store = s3_store(s3_endpoint, bucket)
    with pytest.raises(Boom):
        store.write("broken.clawbk", failing_after(2 * MIN_PART_SIZE + 1024**2))
    assert not store.exists("broken.clawbk")
    assert store.list() == []
    assert open_uploads(store) == []


def test_a_hostile_upload_into_s3_stores_nothing(s3_endpoint: str, bucket: str) -> None:
    store = s3_store(s3_endpoint, bucket)
    good = io.BytesIO()
    with tarfile.open(fileobj=good, mode="w:gz") as tar:
        info = tarfile.TarInfo("noise.bin")
        info.size = 3 * MIN_PART_SIZE
        tar.addfile(info, io.BytesIO(os.urandom(info.size)))
        link = tarfile.TarInfo("escape")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/shadow"
        tar.addfile(link)
    data = good.getvalue()
    limits = UploadLimits(64 * 1024**2, 64 * 1024**2, 10)
    with pytest.raises(ArchiveInvalid, match="'escape' is a symbolic link"):
        import_upload(store, "u/up.clawbk", RING, "up", [data], limits)  # after parts went up
    assert store.list() == [] and open_uploads(store) == []


def test_a_sealed_backup_round_trips_through_s3(
    s3_endpoint: str, bucket: str, tmp_path: Path
) -> None:
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "known.txt").write_text("kept in a bucket\n")
    store = s3_store(s3_endpoint, bucket)
    record = store_backup(store, "u/a/b1.clawbk", RING, "b1", directory_archive(tmp_path / "ws"))
    plain = b"".join(Download(store, record.key, RING, "b1", expected_sha256=record.sha256))
    with tarfile.open(fileobj=io.BytesIO(plain), mode="r:gz") as tar:
        handle = tar.extractfile("known.txt")
        assert handle is not None and handle.read() == b"kept in a bucket\n"


def test_an_unreachable_bucket_is_unavailable() -> None:
    client = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{_free_port()}",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"max_attempts": 1}, connect_timeout=2),
    )
    store = S3Store("nowhere", client=client)
    with pytest.raises(BackupStoreUnavailable, match="the backup bucket failed to store b1"):
        store.write("b1", [b"x"])
    with pytest.raises(BackupStoreUnavailable):
        store.list()
