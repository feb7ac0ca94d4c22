"""Backups in an S3-compatible bucket (AWS, MinIO, Ceph RGW, Garage...), through boto3.

Writes stream as a multipart upload: one part (``part_size``, 8 MiB by default) is held in
memory at a time, and an upload whose stream raises, or whose request fails, is aborted so
the bucket keeps no half-written object (an ``AbortIncompleteMultipartUpload`` lifecycle rule
catches the uploads a killed process never aborted: docs/backups.md). A stream shorter than
one part is a single ``PutObject``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, NoReturn

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from clawhq.backups.sealing import Readable
from clawhq.backups.stores import StoredObject, Written, check_key
from clawhq.errors import BackupNotFound, BackupStoreUnavailable

if TYPE_CHECKING:
    from botocore.response import StreamingBody
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

log = logging.getLogger(__name__)

MIN_PART_SIZE = 5 * 1024**2  # S3's smallest part but the last
DEFAULT_PART_SIZE = 8 * 1024**2
_MISSING = ("NoSuchKey", "404", "NotFound")


def _fail(action: str, exc: Exception) -> NoReturn:
    raise BackupStoreUnavailable(f"the backup bucket failed to {action}: {exc}") from exc


class S3Store:
    """A :class:`~clawhq.backups.stores.BackupStore` on one bucket."""

    def __init__(
        self,
        bucket: str,
        *,
        endpoint: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        client: S3Client | None = None,
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"an S3 part is at least {MIN_PART_SIZE} bytes")
        self.bucket = bucket
        self.part_size = part_size
        config = Config(
            connect_timeout=10,
            read_timeout=60,
            retries={"max_attempts": 4, "mode": "standard"},
            # S3-compatible servers are addressed by path, and not all know the newer checksums.
            s3={"addressing_style": "path"} if endpoint else None,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self._client: S3Client = client or boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=config,
        )

    def write(self, key: str, chunks: Iterable[bytes]) -> Written:
        check_key(key)
        digest, size = hashlib.sha256(), 0
        buffer = bytearray()
        upload_id: str | None = None
        parts: list[CompletedPartTypeDef] = []
        try:
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                buffer += chunk
                while len(buffer) >= self.part_size:
                    if upload_id is None:
                        created = self._client.create_multipart_upload(
                            Bucket=self.bucket, Key=key, ContentType="application/octet-stream"
                        )
                        upload_id = created["UploadId"]
                    with memoryview(buffer) as view:
                        part = bytes(view[: self.part_size])
                    del buffer[: self.part_size]
                    parts.append(self._upload_part(key, upload_id, len(parts) + 1, part))
                    del part  # one part in memory at a time
            if upload_id is None:
                self._client.put_object(
                    Bucket=self.bucket,
                    Key=key,
                    Body=bytes(buffer),
                    ContentType="application/octet-stream",
                )
            else:
                if buffer:
                    last = bytes(buffer)
                    del buffer[:]
                    parts.append(self._upload_part(key, upload_id, len(parts) + 1, last))
                self._client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
        except BaseException as exc:
            if upload_id is not None:
                self._abort(key, upload_id)
            if isinstance(exc, BotoCoreError | ClientError):
                _fail(f"store {key}", exc)
            raise
        return Written(size, digest.hexdigest())

    def _upload_part(
        self, key: str, upload_id: str, number: int, data: bytes
    ) -> CompletedPartTypeDef:
        answer = self._client.upload_part(
            Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data
        )
        return {"ETag": answer["ETag"], "PartNumber": number}

    def _abort(self, key: str, upload_id: str) -> None:
        try:
            self._client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except (BotoCoreError, ClientError) as exc:
            log.warning("could not abort the multipart upload of %s (%s): %s", key, upload_id, exc)

    @contextlib.contextmanager
    def open(self, key: str) -> Iterator[Readable]:
        check_key(key)
        try:
            answer = self._client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                raise BackupNotFound(f"no backup is stored under {key}") from None
            _fail(f"read {key}", exc)
        except BotoCoreError as exc:
            _fail(f"read {key}", exc)
        body = answer["Body"]
        try:
            yield _S3Readable(body, key)
        finally:
            body.close()

    def delete(self, key: str) -> None:
        check_key(key)
        try:
            self._client.delete_object(Bucket=self.bucket, Key=key)
        except (BotoCoreError, ClientError) as exc:
            _fail(f"delete {key}", exc)

    def list(self, prefix: str = "") -> list[StoredObject]:
        found = []
        try:
            pages = self._client.get_paginator("list_objects_v2")
            for page in pages.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    found.append(StoredObject(item["Key"], item["Size"]))
        except (BotoCoreError, ClientError) as exc:
            _fail("list backups", exc)
        return sorted(found, key=lambda stored: stored.key)

    def exists(self, key: str) -> bool:
        check_key(key)
        try:
            self._client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                return False
            _fail(f"look up {key}", exc)
        except BotoCoreError as exc:
            _fail(f"look up {key}", exc)
        return True


class _S3Readable:
    def __init__(self, body: StreamingBody, key: str) -> None:
        self._body = body
        self._key = key

    def read(self, size: int, /) -> bytes:
        try:
            return self._body.read(size)
        except BotoCoreError as exc:
            _fail(f"read {self._key}", exc)
