"""Register, list, resolve, download: round trips through a real server."""

from __future__ import annotations

import hashlib
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.registry.client import RegistryClient
from services.registry.domain import VersionState
from tests.integration.registry.conftest import Running
from tests.unit.registry.registry_onnx import add_model, save, save_external

CONFIG = "dynamic_batching:\n  enabled: true\n  max_batch_size: 16\ninstances: 2\n"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_register_list_download_bit_identical(admin: RegistryClient, tmp_path: Path) -> None:
    src = save(add_model(bias=2.0), tmp_path / "src" / "plain.onnx")
    version = await admin.upload(
        "plain", src, alias="production", config=CONFIG, description="d", labels={"k": "v"}
    )
    assert (version.model, version.version, version.aliases) == ("plain", 1, ("production",))
    assert version.sha256 == digest(src) and version.size_bytes == src.stat().st_size
    assert version.config == CONFIG and version.labels == {"k": "v"}
    assert [(t.name, t.datatype, t.shape) for t in version.signature.inputs] == [
        ("X", "FP32", (-1, 4))
    ]
    models = await admin.list_models()
    assert [(m.name, m.latest_version, m.aliases) for m in models.items] == [
        ("plain", 1, {"production": 1})
    ]
    got = await admin.download("plain", "production", tmp_path / "out")
    assert got.version == 1
    assert (tmp_path / "out" / "model.onnx").read_bytes() == src.read_bytes()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model.onnx"]


async def test_external_data_round_trip(admin: RegistryClient, tmp_path: Path) -> None:
    src = save_external(tmp_path / "src", name="big.onnx", location="big.onnx.data")
    version = await admin.upload("ext", src)
    assert sorted(f.path for f in version.files) == ["big.onnx.data", "model.onnx"]
    data = tmp_path / "src" / "big.onnx.data"
    assert version.total_size_bytes == src.stat().st_size + data.stat().st_size
    out = tmp_path / "out"
    await admin.download("ext", 1, out)
    assert (out / "model.onnx").read_bytes() == src.read_bytes()
    assert (out / "big.onnx.data").read_bytes() == data.read_bytes()
    assert not [p for p in out.iterdir() if p.name.startswith(".download-")]


async def test_versions_aliases_archive_delete(admin: RegistryClient, tmp_path: Path) -> None:
    for i in range(3):
        await admin.upload("m", save(add_model(bias=i), tmp_path / f"{i}.onnx"))
    assert (await admin.resolve("m")).version == 3
    change = await admin.set_alias("m", "production", 2)
    assert (change.alias.version, change.previous_version) == (2, 0)
    assert (await admin.resolve("m")).version == 2
    assert (await admin.resolve("m", "latest")).version == 3
    assert (await admin.resolve("m", 1)).version == 1
    with pytest.raises(FailedPrecondition, match="aliases point at it"):
        await admin.delete_version("m", 2)
    archived = await admin.archive_version("m", 3)
    assert archived.state is VersionState.ARCHIVED
    assert (await admin.resolve("m", "latest")).version == 2
    active = await admin.list_versions("m", state=VersionState.ACTIVE)
    assert [v.version for v in active.items] == [1, 2]
    page = await admin.list_versions_page("m", page_size=2)
    assert [v.version for v in page.items] == [1, 2] and page.next_page_token
    page = await admin.list_versions_page("m", page_size=2, page_token=page.next_page_token)
    assert [v.version for v in page.items] == [3] and not page.next_page_token
    await admin.delete_version("m", 3)
    with pytest.raises(NotFound, match="model 'm' has no version 3"):
        await admin.get_version("m", 3)
    with pytest.raises(FailedPrecondition, match="model 'm' cannot be deleted"):
        await admin.delete_model("m")
    await admin.delete_alias("m", "production")
    await admin.delete_model("m")
    assert (await admin.list_models()).items == []


async def test_models_pagination_and_prefix(admin: RegistryClient) -> None:
    for name in ("b-model", "a-model", "a-other", "c"):
        await admin.create_model(name, description=name.upper(), labels={"team": "x"})
    page = await admin.list_models_page(page_size=3)
    assert [m.name for m in page.items] == ["a-model", "a-other", "b-model"]
    rest = await admin.list_models_page(page_size=3, page_token=page.next_page_token)
    assert [m.name for m in rest.items] == ["c"] and rest.next_page_token == ""
    assert [m.name for m in (await admin.list_models(name_prefix="a-")).items] == [
        "a-model",
        "a-other",
    ]
    model = await admin.get_model("c")
    assert (model.description, model.labels) == ("C", {"team": "x"})


async def test_errors_through_the_server(admin: RegistryClient) -> None:
    with pytest.raises(NotFound, match="model 'missing' not found"):
        await admin.resolve("missing")
    with pytest.raises(InvalidArgument, match=r"invalid model name 'Bad/Name': expected \^"):
        await admin.create_model("Bad/Name")
    with pytest.raises(InvalidArgument, match="invalid alias '123'"):
        await admin.set_alias("x", "123", 1)
    with pytest.raises(InvalidArgument, match="invalid page_token"):
        await admin.list_models_page(page_token="garbage")


async def test_snapshot_and_download_of_deleted(admin: RegistryClient, tmp_path: Path) -> None:
    await admin.upload("a", save(add_model(), tmp_path / "a.onnx"), alias="canary")
    await admin.upload("b", save(add_model(bias=1), tmp_path / "b.onnx"))
    snap = await admin.snapshot()
    assert snap.revision == 5
    assert [(s.model.name, [v.version for v in s.versions]) for s in snap.models] == [
        ("a", [1]),
        ("b", [1]),
    ]
    await admin.delete_version("b", 1)
    with pytest.raises(NotFound):
        await admin.download("b", 1, tmp_path / "gone")
    assert not (tmp_path / "gone").exists() or not any((tmp_path / "gone").iterdir())


async def test_health_needs_no_token(registry: Running) -> None:
    async with grpc.aio.insecure_channel(registry.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = await stub.Check(
            health_pb2.HealthCheckRequest(service="maas.registry.v1.ModelRegistry")
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
