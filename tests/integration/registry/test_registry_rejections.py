"""Every upload rejection is INVALID_ARGUMENT with a message, and leaves nothing behind."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Sequence

import grpc
import pytest
from maas_proto.registry.v1 import registry_pb2 as pb
from maas_proto.registry.v1 import registry_pb2_grpc

from tests.integration.registry.conftest import ADMIN, Running, StartRegistry
from tests.unit.registry.registry_onnx import add_model, external_reference, model_bytes

AUTH = (("authorization", f"Bearer {ADMIN}"),)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def upload(
    registry: Running,
    main: bytes,
    *,
    declared_sha: str | None = None,
    declared_size: int | None = None,
    extra: Sequence[tuple[str, bytes]] = (),
    chunks: Sequence[tuple[str, bytes]] | None = None,
    first: pb.UploadVersionRequest | None = None,
) -> pb.Version:
    """A raw UploadVersion call, so the test controls every declared value."""
    meta = pb.UploadMetadata(
        model="m",
        sha256=declared_sha if declared_sha is not None else sha(main),
        size_bytes=declared_size if declared_size is not None else len(main),
        extra_files=[pb.File(path=p, sha256=sha(d), size_bytes=len(d)) for p, d in extra],
    )
    sent = chunks if chunks is not None else [("", main), *extra]

    async def requests() -> AsyncIterator[pb.UploadVersionRequest]:
        yield first or pb.UploadVersionRequest(metadata=meta)
        for path, data in sent:
            for start in range(0, max(len(data), 1), 1 << 20):
                yield pb.UploadVersionRequest(
                    chunk=pb.FileChunk(file=path, data=data[start : start + (1 << 20)])
                )

    async with grpc.aio.insecure_channel(registry.address) as channel:
        stub = registry_pb2_grpc.ModelRegistryStub(channel)
        return await stub.UploadVersion(requests(), metadata=AUTH)


async def rejected(registry: Running, message: str, main: bytes, **kwargs: object) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await upload(registry, main, **kwargs)  # type: ignore[arg-type]
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert message in (info.value.details() or ""), info.value.details()
    await nothing_left(registry)


async def nothing_left(registry: Running) -> None:
    async with registry.client() as client:
        assert (await client.list_models()).items == []
    blobs = registry.settings.data_dir / "blobs"
    assert list((blobs / "sha256").rglob("*")) == []
    assert list((blobs / "tmp").iterdir()) == []


def broken_model() -> bytes:
    model = add_model()
    model.graph.node[0].input[1] = "undefined"
    return model.SerializeToString()


GOOD = model_bytes()
BROKEN = broken_model()


@pytest.mark.parametrize(
    ("message", "main", "kwargs"),
    [
        ("model.onnx is not an ONNX model", b"\xff\xfe garbage", {}),
        (
            "model.onnx imports no ai.onnx opset",
            pb.UploadMetadata(model="x").SerializeToString(),
            {},
        ),
        ("failed the ONNX checker", BROKEN, {}),
        ("expected 7..20, got 21", model_bytes(21), {}),
        (
            "external data location '../../etc/passwd' points outside the model directory",
            external_reference("../../etc/passwd"),
            {},
        ),
        (
            "external data location '/etc/passwd' points outside the model directory",
            external_reference("/etc/passwd"),
            {},
        ),
        (
            "names a file that was not uploaded: expected one of [], got 'w.bin'",
            external_reference("w.bin"),
            {},
        ),
        (
            f"file 'model.onnx': sha256 mismatch: expected {sha(b'other')}, got {sha(GOOD)}",
            GOOD,
            {"declared_sha": sha(b"other")},
        ),
        (
            f"file 'model.onnx': size mismatch: declared {len(GOOD) + 5} bytes, "
            f"received {len(GOOD)}",
            GOOD,
            {"declared_size": len(GOOD) + 5},
        ),
        (
            f"file 'model.onnx': size mismatch: declared {len(GOOD) - 5} bytes, received more",
            GOOD,
            {"declared_size": len(GOOD) - 5},
        ),
        (
            "file 'w.bin': sha256 mismatch",
            GOOD,
            {
                "extra": [("w.bin", b"1234")],
                "chunks": [("", GOOD), ("w.bin", b"4321")],
            },
        ),
        (
            "chunk for file 'other.bin' that the metadata does not declare",
            GOOD,
            {"chunks": [("", GOOD), ("other.bin", b"x")]},
        ),
        ("invalid file path '../evil'", GOOD, {"chunks": [("../evil", b"x")]}),
        ("sha256 must be 64 hex digits", GOOD, {"declared_sha": "abc"}),
        (
            "expected metadata as the first message, got a chunk",
            GOOD,
            {"first": pb.UploadVersionRequest(chunk=pb.FileChunk(data=b"x"))},
        ),
    ],
    ids=[
        "bad-onnx",
        "no-opset",
        "checker",
        "opset",
        "traversal",
        "absolute",
        "missing-external",
        "sha-mismatch",
        "size-short",
        "size-long",
        "extra-sha",
        "undeclared-file",
        "bad-path",
        "bad-sha",
        "no-metadata",
    ],
)
async def test_rejections(
    start_registry: StartRegistry, message: str, main: bytes, kwargs: dict[str, object]
) -> None:
    registry = await start_registry(opset_max=20)
    await rejected(registry, message, main, **kwargs)


async def test_too_large(start_registry: StartRegistry) -> None:
    registry = await start_registry(max_model_bytes=100)
    expected = f"upload too large: declares {len(GOOD)} bytes, expected at most 100 bytes"
    await rejected(registry, expected, GOOD)


async def test_bad_config(start_registry: StartRegistry) -> None:
    registry = await start_registry()
    meta = pb.UploadMetadata(model="m", sha256=sha(GOOD), size_bytes=len(GOOD), config="- a\n")
    await rejected(
        registry,
        "config: expected a YAML mapping",
        GOOD,
        first=pb.UploadVersionRequest(metadata=meta),
    )


async def test_oversized_message_is_resource_exhausted(start_registry: StartRegistry) -> None:
    registry = await start_registry(max_message_bytes=64 * 1024)
    big = b"\0" * (128 * 1024)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await upload(registry, big, chunks=[("", big)])
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    await nothing_left(registry)


async def test_valid_upload_after_rejections(start_registry: StartRegistry) -> None:
    registry = await start_registry()
    await rejected(registry, "sha256 mismatch", GOOD, declared_sha=sha(b"x"))
    version = await upload(registry, GOOD)
    assert (version.model, version.version, version.sha256) == ("m", 1, sha(GOOD))
