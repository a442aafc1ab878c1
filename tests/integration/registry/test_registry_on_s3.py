"""A registry on S3 (SeaweedFS): uploads, downloads, rejections and garbage collection."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

import grpc
import pytest
from maas_proto.registry.v1 import registry_pb2 as pb
from maas_proto.registry.v1 import registry_pb2_grpc

from services.common.errors import Unavailable
from tests.integration.registry.conftest import ADMIN, Running, StartRegistry
from tests.integration.registry.replicas import (  # noqa: F401 - fixtures
    bucket,
    incomplete_uploads,
    keys,
    pg_url,
    s3,
    s3_env,
)
from tests.s3server import SeaweedS3, seaweed_s3
from tests.unit.registry.registry_onnx import add_model, model_bytes, save, save_external


@pytest.fixture
async def on_s3(
    start_registry: StartRegistry,
    s3_env: dict[str, str],  # noqa: F811
    bucket: str,  # noqa: F811
) -> Running:
    return await start_registry(blob_url=f"s3://{bucket}/models", gc_interval_seconds=0)


def blob_key(sha: str) -> str:
    return f"models/sha256/{sha[:2]}/{sha}"


async def test_upload_and_download_through_the_object_store(
    on_s3: Running,
    s3: SeaweedS3,  # noqa: F811
    bucket: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    ext = save_external(tmp_path / "src", width=4096)
    async with on_s3.client() as client:
        version = await client.upload("m", ext)
        again = await client.upload("m", ext)  # same files: stored once
        await client.download("m", "1", tmp_path / "out")
    assert (again.version, again.sha256) == (2, version.sha256)
    for got, sent in (("model.onnx", "net.onnx"), ("net.onnx.data", "net.onnx.data")):
        assert (tmp_path / "out" / got).read_bytes() == (tmp_path / "src" / sent).read_bytes()
    assert keys(s3, bucket) == sorted(blob_key(f.sha256) for f in version.files)
    # Nothing stays behind locally: the files live in the bucket only.
    assert list((on_s3.settings.data_dir / "blobs" / "tmp").iterdir()) == []
    assert not (on_s3.settings.data_dir / "blobs" / "sha256").exists()


async def test_a_bad_sha_upload_leaves_no_object(
    on_s3: Running,
    s3: SeaweedS3,  # noqa: F811
    bucket: str,  # noqa: F811
) -> None:
    data = model_bytes()
    meta = pb.UploadMetadata(model="m", sha256="0" * 64, size_bytes=len(data))
    requests = [
        pb.UploadVersionRequest(metadata=meta),
        pb.UploadVersionRequest(chunk={"data": data}),
    ]
    async with grpc.aio.insecure_channel(on_s3.address) as channel:
        stub = registry_pb2_grpc.ModelRegistryStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.UploadVersion(
                iter(requests), metadata=(("authorization", f"Bearer {ADMIN}"),)
            )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "sha256 mismatch" in (info.value.details() or "")
    assert keys(s3, bucket) == [] and incomplete_uploads(s3, bucket) == []
    async with on_s3.client() as client:
        assert (await client.list_models()).items == []


async def test_gc_spares_young_garbage_and_versions_and_takes_the_rest(
    on_s3: Running,
    s3: SeaweedS3,  # noqa: F811
    bucket: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    async with on_s3.client() as client:
        version = await client.upload("m", save(add_model(), tmp_path / "m.onnx"))
    registry = on_s3.server.registry
    orphan = tmp_path / "orphan"
    orphan.write_bytes(b"an upload that stored its file and never committed")
    orphan_sha = hashlib.sha256(orphan.read_bytes()).hexdigest()
    registry.blobs.put(orphan, orphan_sha)
    half = s3.client().create_multipart_upload(Bucket=bucket, Key=blob_key("a" * 64))
    s3.client().upload_part(
        Bucket=bucket, Key=blob_key("a" * 64), UploadId=half["UploadId"], PartNumber=1, Body=b"x"
    )
    everything = sorted([blob_key(version.sha256), blob_key(orphan_sha)])

    young = await registry.gc.collect()  # grace: the default hour
    assert (young.collected, young.aborted) == ([], [])
    assert keys(s3, bucket) == everything
    assert incomplete_uploads(s3, bucket) == [blob_key("a" * 64)]

    registry.gc.clock = lambda: time.time() + 2 * registry.settings.gc_grace_seconds
    old = await registry.gc.collect()
    assert (old.collected, old.aborted) == ([orphan_sha], [blob_key("a" * 64)])
    assert keys(s3, bucket) == [blob_key(version.sha256)]
    assert incomplete_uploads(s3, bucket) == []
    assert registry.metrics is not None
    [total] = [
        s
        for s in registry.metrics.blobs_collected.collect()[0].samples
        if s.name.endswith("_total")
    ]
    assert total.value == 1
    async with on_s3.client() as client:
        await client.download("m", "1", tmp_path / "out")
    assert (tmp_path / "out" / "model.onnx").read_bytes() == (tmp_path / "m.onnx").read_bytes()


async def test_a_missing_bucket_stops_the_start_with_its_name(
    start_registry: StartRegistry,
    s3_env: dict[str, str],  # noqa: F811
) -> None:
    with pytest.raises(ValueError, match="bucket 'absent-bucket' at http://127.0.0.1:\\d+ does"):
        await start_registry(blob_url="s3://absent-bucket/x")


async def test_a_store_gone_away_is_unavailable_and_names_no_internals(
    start_registry: StartRegistry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with seaweed_s3() as own:
        for name, value in own.env().items():
            monkeypatch.setenv(name, value)
        registry = await start_registry(blob_url=f"s3://{own.bucket()}/m", gc_interval_seconds=0)
    async with registry.client() as client:
        with pytest.raises(Unavailable) as info:
            await client.upload("m", save(add_model(), tmp_path / "m.onnx"))
        assert info.value.message == "the object store is unreachable or failing; retry"
        assert (await client.list_models()).items == []
    assert list((registry.settings.data_dir / "blobs" / "tmp").iterdir()) == []


async def test_the_collector_runs_every_interval(
    start_registry: StartRegistry,
    s3_env: dict[str, str],  # noqa: F811
    s3: SeaweedS3,  # noqa: F811
    bucket: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    registry = await start_registry(
        blob_url=f"s3://{bucket}/models", gc_interval_seconds=0.2, gc_grace_seconds=0
    )
    async with registry.client() as client:
        version = await client.upload("m", save(add_model(), tmp_path / "m.onnx"))
    orphan = blob_key("b" * 64)
    s3.client().put_object(Bucket=bucket, Key=orphan, Body=b"garbage")
    deadline = time.monotonic() + 30
    while orphan in keys(s3, bucket):
        assert time.monotonic() < deadline, "the periodic collection never ran"
        await asyncio.sleep(0.05)
    assert keys(s3, bucket) == [blob_key(version.sha256)]
