"""The S3 blob store against a real S3 server (SeaweedFS)."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from services.registry.blobs_s3 import S3BlobStore, parse_blob_url
from tests.integration.registry.replicas import (  # noqa: F401 - fixtures
    bucket,
    incomplete_uploads,
    keys,
    s3,
    s3_env,
)
from tests.s3server import SeaweedS3

PART = 5 << 20  # S3's smallest part


def staged(store: S3BlobStore, data: bytes) -> tuple[Path, str]:
    path = store.new_staging_dir() / "f"
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(s3_env: dict[str, str], bucket: str, tmp_path: Path) -> S3BlobStore:  # noqa: F811
    made = S3BlobStore(bucket, "pre/fix", tmp_path / "staging", part_bytes=PART)
    made.check()
    return made


def test_blob_url_names_bucket_and_prefix() -> None:
    assert parse_blob_url("s3://b/some/prefix/") == ("b", "some/prefix")
    assert parse_blob_url("s3://b") == ("b", "")
    with pytest.raises(ValueError, match=r"expected s3://bucket\[/prefix\]"):
        parse_blob_url("gs://b/p")


def test_endpoint_and_region_come_from_the_aws_environment_or_the_override(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://from-env:9000")
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    from_env = S3BlobStore("b", "", tmp_path / "a")
    assert from_env.endpoint_url == "http://from-env:9000"
    assert from_env.where == "bucket 'b' at http://from-env:9000"
    assert from_env.region == "eu-west-3"
    overridden = S3BlobStore("b", "p", tmp_path / "b", endpoint_url="https://override:443")
    assert overridden.endpoint_url == "https://override:443"
    assert overridden.key("c" * 64) == f"p/sha256/cc/{'c' * 64}"


def test_put_exists_open_list_delete(
    store: S3BlobStore,
    s3: SeaweedS3,  # noqa: F811
    bucket: str,  # noqa: F811
) -> None:
    source, sha = staged(store, b"hello")
    missing = "0" * 64
    assert not store.exists(sha)
    store.put(source, sha)
    assert source.exists()  # left for the caller's staging cleanup
    assert store.exists(sha) and not store.exists(missing)
    assert keys(s3, bucket) == [f"pre/fix/sha256/{sha[:2]}/{sha}"]
    with store.open(sha) as handle:
        assert handle.read(2) == b"he" and handle.read() == b"llo"
    with pytest.raises(FileNotFoundError):
        store.open(missing)
    assert store.list() == [sha]
    [blob] = store.stored()
    assert blob.sha256 == sha and abs(blob.modified - time.time()) < 300
    store.delete(sha)
    store.delete(sha)  # absent: no error
    assert store.list() == [] and keys(s3, bucket) == []


def test_a_multipart_file_round_trips_and_is_stored_once(
    store: S3BlobStore,
    s3: SeaweedS3,  # noqa: F811
    bucket: str,  # noqa: F811
) -> None:
    data = os.urandom(PART * 2 + 12345)
    first, sha = staged(store, data)
    store.put(first, sha)
    head = s3.client().head_object(Bucket=bucket, Key=store.key(sha))
    assert head["ContentLength"] == len(data)
    assert head["ETag"].strip('"').endswith("-3")  # three parts
    modified = head["LastModified"]
    second, _ = staged(store, data)
    store.put(second, sha)  # dedup: not uploaded again
    assert s3.client().head_object(Bucket=bucket, Key=store.key(sha))["LastModified"] == modified
    assert keys(s3, bucket) == [store.key(sha)]
    with store.open(sha) as handle:
        assert hashlib.sha256(handle.read()).hexdigest() == sha
    assert incomplete_uploads(s3, bucket) == []


def test_incomplete_uploads_are_aborted_only_when_old(
    store: S3BlobStore,
    s3: SeaweedS3,  # noqa: F811
    bucket: str,  # noqa: F811
) -> None:
    key = store.key("a" * 64)
    client = s3.client()
    upload = client.create_multipart_upload(Bucket=bucket, Key=key)
    client.upload_part(
        Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=b"x" * PART
    )
    assert store.abort_incomplete(before=time.time() - 3600) == []
    assert incomplete_uploads(s3, bucket) == [key]
    assert store.abort_incomplete(before=time.time() + 3600) == [key]
    assert incomplete_uploads(s3, bucket) == [] and keys(s3, bucket) == []


def test_a_missing_bucket_is_a_clear_error(
    s3: SeaweedS3,  # noqa: F811
    s3_env: dict[str, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    store = S3BlobStore("no-such-bucket", "", tmp_path / "staging")
    with pytest.raises(ValueError, match="bucket 'no-such-bucket' at http://127.0.0.1:.* does not"):
        store.check()
