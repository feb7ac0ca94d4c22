"""Backups through the API into an S3-compatible bucket (moto's server on loopback)."""

from __future__ import annotations

import io
import tarfile
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest

from tests.conftest import Api, running_app
from tests.doubles.runtime import FakeRuntime
from tests.unit.test_api_backups import running_agent, take, volume, wait_backup
from tests.unit.test_backup_stores import _loopback_only, s3_endpoint  # noqa: F401 (fixtures)


@pytest.fixture
def s3_api(
    make_settings: Callable[..., Any],
    s3_endpoint: str,  # noqa: F811 (the fixture imported above)
    fake_runtime: FakeRuntime,
) -> Iterator[tuple[Api, Any, str]]:
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    bucket = f"clawhq-api-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    settings = make_settings(
        supervise=False,
        backup_s3_bucket=bucket,
        backup_s3_endpoint=s3_endpoint,
        backup_s3_region="us-east-1",
        backup_s3_access_key_id="testing",
        backup_s3_secret_access_key="testing",
    )
    with running_app(settings, fake_runtime, probe=lambda url: True) as api:
        yield api, client, bucket


def test_a_backup_in_s3_restores_downloads_and_deletes(
    s3_api: tuple[Api, Any, str], fake_runtime: FakeRuntime
) -> None:
    api, client, bucket = s3_api
    owner, agent_id = running_agent(api, fake_runtime, {"notes.md": b"in the bucket"})
    backup = take(api, owner, agent_id)
    (found,) = client.list_objects_v2(Bucket=bucket)["Contents"]
    assert found["Key"] == f"{owner['X-User-Id']}/{agent_id}/{backup['id']}.clawbk"
    assert found["Size"] == backup["size"]
    body = client.get_object(Bucket=bucket, Key=found["Key"])["Body"].read()
    assert b"in the bucket" not in body  # sealed

    fake_runtime.workspace_files[volume(agent_id)] = {}
    url = f"/api/agents/{agent_id}/backups/{backup['id']}"
    assert api.client.post(f"{url}/restore", headers=owner).status_code == 202
    wait_backup(api, owner, agent_id, backup["id"], restoreStatus="RESTORED")
    assert fake_runtime.workspace_files[volume(agent_id)] == {"notes.md": b"in the bucket"}

    archive = api.client.get(f"{url}/download", headers=owner)
    with tarfile.open(fileobj=io.BytesIO(archive.content)) as tar:
        assert tar.extractfile("./notes.md").read() == b"in the bucket"  # type: ignore[union-attr]
    assert api.client.delete(url, headers=owner).status_code == 204
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert found["Key"] not in keys  # the pre_restore backup is all that is left
    assert len(keys) == 1
