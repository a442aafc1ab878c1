"""Registry replicas: `maas-registry` processes on one PostgreSQL and one S3 bucket."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import psycopg
import pytest
from maas_proto.registry.v1 import registry_pb2 as pb
from maas_proto.registry.v1 import registry_pb2_grpc

from services.common.errors import Unavailable
from services.common.files import sha256_file
from services.registry.client import RegistryClient
from services.registry.store.locks import BLOB_LOCK_KEY
from tests.integration.registry.conftest import ADMIN
from tests.integration.registry.replicas import (  # noqa: F401 - fixtures
    Cluster,
    bucket,
    cluster,
    incomplete_uploads,
    keys,
    pg_url,
    s3,
    s3_env,
)
from tests.s3server import SeaweedS3
from tests.unit.registry.registry_onnx import add_model, save

pytestmark = pytest.mark.postgres
AUTH = (("authorization", f"Bearer {ADMIN}"),)
CHUNK = 1 << 20


def blob_key(sha: str) -> str:
    return f"models/sha256/{sha[:2]}/{sha}"


def wait_until(check: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


async def test_upload_through_a_then_download_through_b(
    cluster: Cluster,  # noqa: F811
    s3: SeaweedS3,  # noqa: F811
    bucket: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    a, b = cluster.start_replica(), cluster.start_replica()
    model = save(add_model(width=64, bias=2.0), tmp_path / "m.onnx")
    async with RegistryClient(a.address, ADMIN) as on_a:
        sent = await on_a.upload("m", model, alias="production")
    async with RegistryClient(b.address, ADMIN) as on_b:
        got = await on_b.download("m", "production", tmp_path / "out")
        assert [v.version for v in (await on_b.list_versions("m")).items] == [1]
    assert (got.version, got.sha256) == (sent.version, sent.sha256)
    assert (tmp_path / "out" / "model.onnx").read_bytes() == model.read_bytes()
    assert keys(s3, bucket) == [blob_key(sent.sha256)]
    # Deleted through B, the blob goes for every replica.
    async with RegistryClient(b.address, ADMIN) as on_b:
        await on_b.delete_alias("m", "production")
        await on_b.delete_version("m", 1)
    assert keys(s3, bucket) == []


async def test_sigkill_mid_upload_then_retry_on_the_other_replica(
    cluster: Cluster,  # noqa: F811
    s3: SeaweedS3,  # noqa: F811
    bucket: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    a, b = cluster.start_replica(), cluster.start_replica()
    model = save(add_model(width=50_000_000 // 4, bias=0.5), tmp_path / "big.onnx")
    sha, size = sha256_file(model)
    data = model.read_bytes()
    half = size // 2
    sent_half, hold = asyncio.Event(), asyncio.Event()

    async def requests() -> AsyncIterator[pb.UploadVersionRequest]:
        yield pb.UploadVersionRequest(
            metadata=pb.UploadMetadata(model="big", sha256=sha, size_bytes=size)
        )
        for start in range(0, half, CHUNK):
            yield pb.UploadVersionRequest(chunk=pb.FileChunk(data=data[start : start + CHUNK]))
        sent_half.set()
        await hold.wait()

    def staged_bytes() -> int:
        return sum(p.stat().st_size for p in a.staging.rglob("*") if p.is_file())

    async with grpc.aio.insecure_channel(a.address) as channel:
        call = registry_pb2_grpc.ModelRegistryStub(channel).UploadVersion(requests(), metadata=AUTH)
        await sent_half.wait()
        await asyncio.to_thread(wait_until, lambda: staged_bytes() >= half - CHUNK, "staging")
        async with RegistryClient(b.address, ADMIN) as on_b:
            assert [m.name for m in (await on_b.list_models()).items] == []
        a.kill()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        hold.set()

    # The client retries; with both addresses, pick_first finds the survivor.
    both = f"ipv4:127.0.0.1:{a.port},127.0.0.1:{b.port}"
    async with RegistryClient(both, ADMIN, timeout=120) as client:
        async with RegistryClient(b.address, ADMIN) as on_b:
            assert [m.name for m in (await on_b.list_models()).items] == []
        version = await client.upload("big", model)
    assert (version.version, version.sha256) == (1, sha)
    async with RegistryClient(b.address, ADMIN) as on_b:
        assert [v.version for v in (await on_b.list_versions("big")).items] == [1]

    report = cluster.registry_command("--gc", "--gc-grace-seconds", "0")
    assert report["collected"] == [] and report["aborted"] == []
    assert keys(s3, bucket) == [blob_key(sha)]
    assert incomplete_uploads(s3, bucket) == []
    a.restart()  # on its own data dir: its half-staged upload is removed
    a.wait_for_port()
    assert list(a.staging.iterdir()) == []
    async with RegistryClient(a.address, ADMIN, timeout=120) as on_a:
        await on_a.download("big", "1", tmp_path / "out")
    assert sha256_file(tmp_path / "out" / "model.onnx") == (sha, size)


async def test_sigkill_mid_multipart_put_leaves_nothing_visible(
    cluster: Cluster,  # noqa: F811
    s3: SeaweedS3,  # noqa: F811
    bucket: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Replica A dies after the whole file arrived and was verified, while its
    multipart put to the store is under way (seen in the bucket's incomplete uploads):
    no replica lists the version, no object stands at its key, the retry through B
    stores it once, and GC aborts A's incomplete upload."""
    a, b = cluster.start_replica(), cluster.start_replica()
    model = save(add_model(width=50_000_000 // 4, bias=0.25), tmp_path / "big.onnx")
    sha, _ = sha256_file(model)
    async with RegistryClient(a.address, ADMIN, timeout=120) as on_a:
        upload = asyncio.ensure_future(on_a.upload("big", model))
        await asyncio.to_thread(
            wait_until, lambda: incomplete_uploads(s3, bucket) != [], "A's multipart put"
        )
        a.kill()
        with pytest.raises(Unavailable):
            await upload
    assert incomplete_uploads(s3, bucket) == [blob_key(sha)]  # A never completed it
    assert keys(s3, bucket) == []
    async with RegistryClient(b.address, ADMIN, timeout=120) as on_b:
        assert [m.name for m in (await on_b.list_models()).items] == []
        version = await on_b.upload("big", model)
    assert (version.version, version.sha256) == (1, sha)
    assert keys(s3, bucket) == [blob_key(sha)]

    report = cluster.registry_command("--gc", "--gc-grace-seconds", "0")
    assert report["collected"] == [] and report["aborted"] == [blob_key(sha)]
    assert incomplete_uploads(s3, bucket) == []
    assert keys(s3, bucket) == [blob_key(sha)]
    async with RegistryClient(b.address, ADMIN, timeout=120) as on_b:
        await on_b.download("big", "1", tmp_path / "out")
    assert sha256_file(tmp_path / "out" / "model.onnx") == sha256_file(model)


async def test_the_blob_lock_is_held_across_processes(
    cluster: Cluster,  # noqa: F811
    pg_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    replica = cluster.start_replica()
    model = save(add_model(), tmp_path / "m.onnx")
    waiting = (
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objid = %s"
    )
    with psycopg.connect(pg_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (BLOB_LOCK_KEY,))
        async with RegistryClient(replica.address, ADMIN) as client:
            upload = asyncio.create_task(client.upload("m", model))
            # The replica's commit waits in PostgreSQL for the lock another session holds.
            await asyncio.to_thread(
                wait_until,
                lambda: holder.execute(waiting, (BLOB_LOCK_KEY,)).fetchone()[0] == 1,  # type: ignore[index]
                "the replica to wait for the blob lock",
            )
            assert (await client.list_models()).items == []
            holder.execute("SELECT pg_advisory_unlock(%s)", (BLOB_LOCK_KEY,))
            assert (await upload).version == 1


async def test_a_blob_collected_before_the_commit_is_stored_again(
    cluster: Cluster,  # noqa: F811
    s3: SeaweedS3,  # noqa: F811
    bucket: str,  # noqa: F811
    pg_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    replica = cluster.start_replica()
    model = save(add_model(bias=7.0), tmp_path / "m.onnx")
    sha, _ = sha256_file(model)
    # An orphan with the same content (a crash between put and commit, say): the
    # upload deduplicates against it and skips its own put.
    s3.client().put_object(Bucket=bucket, Key=blob_key(sha), Body=model.read_bytes())
    waiting = (
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objid = %s"
    )
    with psycopg.connect(pg_url, autocommit=True) as gc_replica:
        gc_replica.execute("SELECT pg_advisory_lock(%s)", (BLOB_LOCK_KEY,))
        async with RegistryClient(replica.address, ADMIN) as client:
            upload = asyncio.create_task(client.upload("m", model))
            await asyncio.to_thread(
                wait_until,
                lambda: gc_replica.execute(waiting, (BLOB_LOCK_KEY,)).fetchone()[0] == 1,  # type: ignore[index]
                "the upload to wait for the blob lock",
            )
            # What another replica's collector does with the lock: the orphan is garbage.
            s3.client().delete_object(Bucket=bucket, Key=blob_key(sha))
            gc_replica.execute("SELECT pg_advisory_unlock(%s)", (BLOB_LOCK_KEY,))
            assert (await upload).sha256 == sha
            await client.download("m", "1", tmp_path / "out")
    assert keys(s3, bucket) == [blob_key(sha)]
    assert (tmp_path / "out" / "model.onnx").read_bytes() == model.read_bytes()
