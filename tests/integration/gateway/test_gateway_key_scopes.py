"""API keys through a real gateway: allow-lists on calls about every model, scopes, the
per-key stream cap, and rate-limited calls counted whatever the method (issue B, 4/7/16)."""

from __future__ import annotations

import asyncio
import shutil
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from prometheus_client.parser import text_string_to_metric_families

from services.gateway.main import GatewayServer
from services.registry.client import RegistryClient
from services.registry.main import RegistryServer
from tests.integration.conftest import READER
from tests.integration.gateway.conftest import (
    StartGateway,
    StartInference,
    backend_address,
    pair_request,
    registry_address,
    until,
)

Connect = Callable[[GatewayServer], pb_grpc.GRPCInferenceServiceStub]
KEYS = """
keys:
  - {id: team-other, key: key-other, models: [other]}
  - {id: team-all, key: key-all}
  - {id: infer-only, key: key-infer, scopes: [inference]}
  - {id: stats-only, key: key-stats, models: [pair], scopes: [statistics]}
  - {id: slow, key: key-slow, rate_per_second: 0.001, burst: 1}
  - {id: streamer, key: key-stream, models: [pair]}
  - {id: streamer-2, key: key-stream-2}
"""
STREAMS_PER_KEY = 2


def bearer(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


async def refusal(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys.yaml"
    path.write_text(KEYS)
    return path


@pytest.fixture
def two_models(pair_repository: Path, tmp_path: Path) -> Path:
    """The pair repository plus the same model as `other` version 1."""
    root = tmp_path / "two-models"
    shutil.copytree(pair_repository, root)
    (root / "other" / "1").mkdir(parents=True)
    shutil.copy(root / "pair" / "1" / "model.onnx", root / "other" / "1" / "model.onnx")
    return root


@pytest.fixture
async def gateway(
    start_inference: StartInference, start_gateway: StartGateway, keys_file: Path, two_models: Path
) -> GatewayServer:
    backend = await start_inference(two_models)
    return await start_gateway(
        backends=backend_address(backend),
        api_keys_file=str(keys_file),
        max_streams_per_key=STREAMS_PER_KEY,
    )


async def statistics_names(
    stub: pb_grpc.GRPCInferenceServiceStub, key: str, version: str = ""
) -> set[str]:
    request = pb.ModelStatisticsRequest(name="", version=version)
    reply = await stub.ModelStatistics(request, metadata=bearer(key), timeout=10)
    return {s.name for s in reply.model_stats}


async def test_statistics_of_every_model_show_only_the_keys_models(
    gateway: GatewayServer, connect: Connect
) -> None:
    stub = connect(gateway)
    assert await statistics_names(stub, "key-all") == {"pair", "other"}
    assert await statistics_names(stub, "key-other") == {"other"}
    assert await statistics_names(stub, "key-other", version="1") == {"other"}
    assert await statistics_names(stub, "key-stats") == {"pair"}
    named = pb.ModelStatisticsRequest(name="pair")
    denied = await refusal(stub.ModelStatistics(named, metadata=bearer("key-other"), timeout=10))
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_calls_about_one_model_need_one_the_key_lists(
    gateway: GatewayServer, connect: Connect
) -> None:
    stub = connect(gateway)
    other = bearer("key-other")
    for name in ("pair", ""):
        calls = (
            stub.ModelReady(pb.ModelReadyRequest(name=name), metadata=other, timeout=10),
            stub.ModelMetadata(pb.ModelMetadataRequest(name=name), metadata=other, timeout=10),
            stub.ModelConfig(pb.ModelConfigRequest(name=name), metadata=other, timeout=10),
            stub.ModelInfer(pb.ModelInferRequest(model_name=name), metadata=other, timeout=10),
        )
        for call in calls:
            denied = await refusal(call)
            assert denied.code() == grpc.StatusCode.PERMISSION_DENIED, (name, denied)
            assert "team-other" in (denied.details() or "")
    ready = await stub.ModelReady(pb.ModelReadyRequest(name="other"), metadata=other, timeout=10)
    assert ready.ready


async def test_repository_index_without_a_registry_lists_only_the_keys_models(
    gateway: GatewayServer, connect: Connect
) -> None:
    stub = connect(gateway)
    index = await stub.RepositoryIndex(pb.RepositoryIndexRequest(), metadata=bearer("key-other"))
    assert {m.name for m in index.models} == {"other"}
    index = await stub.RepositoryIndex(pb.RepositoryIndexRequest(), metadata=bearer("key-all"))
    assert {m.name for m in index.models} == {"pair", "other"}


async def test_repository_index_through_a_registry_lists_only_the_keys_models(
    pair_in_registry: RegistryClient,
    registry: RegistryServer,
    start_inference: StartInference,
    start_gateway: StartGateway,
    connect: Connect,
    keys_file: Path,
    two_models: Path,
) -> None:
    await pair_in_registry.upload("other", two_models / "other" / "1" / "model.onnx")
    backend = await start_inference(two_models)
    gateway = await start_gateway(
        registry=registry_address(registry),
        registry_token=READER,
        backends=backend_address(backend),
        api_keys_file=str(keys_file),
    )
    assert gateway.routes is not None
    await until(lambda: set(gateway.routes.models) == {"pair", "other"})  # type: ignore[union-attr]
    stub = connect(gateway)
    for ready in (False, True):
        request = pb.RepositoryIndexRequest(ready=ready)
        index = await stub.RepositoryIndex(request, metadata=bearer("key-other"), timeout=10)
        assert {(m.name, m.version) for m in index.models} == {("other", "1")}
    index = await stub.RepositoryIndex(pb.RepositoryIndexRequest(), metadata=bearer("key-all"))
    assert {m.name for m in index.models} == {"pair", "other"}
    assert await statistics_names(stub, "key-other") == {"other"}


async def test_a_key_without_a_scope_is_refused_naming_the_scope_and_the_key_id(
    gateway: GatewayServer, connect: Connect
) -> None:
    stub = connect(gateway)
    infer = bearer("key-infer")
    response = await stub.ModelInfer(pair_request(), metadata=infer, timeout=10)
    assert response.model_name == "pair"
    # Health is open to any valid key.
    assert (await stub.ServerLive(pb.ServerLiveRequest(), metadata=infer)).live
    assert (await stub.ServerReady(pb.ServerReadyRequest(), metadata=infer)).ready
    refused = {
        "metadata": [
            stub.ServerMetadata(pb.ServerMetadataRequest(), metadata=infer, timeout=10),
            stub.ModelMetadata(pb.ModelMetadataRequest(name="pair"), metadata=infer, timeout=10),
            stub.ModelConfig(pb.ModelConfigRequest(name="pair"), metadata=infer, timeout=10),
            stub.ModelReady(pb.ModelReadyRequest(name="pair"), metadata=infer, timeout=10),
        ],
        "statistics": [stub.ModelStatistics(pb.ModelStatisticsRequest(), metadata=infer)],
        "repository": [
            stub.RepositoryIndex(pb.RepositoryIndexRequest(), metadata=infer, timeout=10),
            stub.RepositoryModelLoad(
                pb.RepositoryModelLoadRequest(model_name="pair"), metadata=infer
            ),
        ],
    }
    for scope, calls in refused.items():
        for call in calls:
            denied = await refusal(call)
            assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
            details = denied.details() or ""
            assert f"API key 'infer-only' lacks the '{scope}' scope" in details, details
            assert "key-infer" not in details
    # A statistics-only key may not infer, on a stream either: refused before any request.
    stats = bearer("key-stats")
    denied = await refusal(stub.ModelInfer(pair_request(), metadata=stats, timeout=10))
    assert "lacks the 'inference' scope that ModelInfer needs" in (denied.details() or "")
    stream = stub.ModelStreamInfer(metadata=stats, timeout=10)
    assert await stream.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "lacks the 'inference' scope that ModelStreamInfer needs" in await stream.details()


async def open_stream(
    stub: pb_grpc.GRPCInferenceServiceStub, key: str
) -> grpc.aio.StreamStreamCall:
    """A stream that has been answered once, so the gateway holds its slot."""
    stream = stub.ModelStreamInfer(metadata=bearer(key), timeout=60)
    await stream.write(pair_request(id="first"))
    reply = await stream.read()
    assert reply.error_message == "" and reply.infer_response.id == "first"
    return stream


async def test_each_key_has_at_most_its_streams_open_and_an_ended_stream_frees_its_slot(
    gateway: GatewayServer, connect: Connect
) -> None:
    stub = connect(gateway)
    streams = [await open_stream(stub, "key-stream") for _ in range(STREAMS_PER_KEY)]
    over = stub.ModelStreamInfer(metadata=bearer("key-stream"), timeout=10)
    assert await over.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = await over.details()
    assert f"at most {STREAMS_PER_KEY} at once (max_streams_per_key)" in details
    assert "'streamer'" in details and "key-stream" not in details
    slots = gateway.router.streams
    # Another key has slots of its own.
    other = await open_stream(stub, "key-stream-2")
    await other.done_writing()
    assert await other.code() == grpc.StatusCode.OK
    # A cancelled stream frees its slot...
    streams[0].cancel()
    await until(lambda: slots.open("streamer") == STREAMS_PER_KEY - 1)
    replacement = await open_stream(stub, "key-stream")
    # ...and so does one that ends normally.
    await streams[1].done_writing()
    assert await streams[1].code() == grpc.StatusCode.OK
    await until(lambda: slots.open("streamer") == 1)
    await replacement.done_writing()
    assert await replacement.code() == grpc.StatusCode.OK
    await until(lambda: slots.open("streamer") == 0 and not slots._open)


def rate_limited(gateway: GatewayServer, key: str) -> float:
    """maas_gateway_rate_limited_requests_total for `key`, scraped from the /metrics port."""
    url = f"http://localhost:{gateway.grpc.metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == "maas_gateway_rate_limited_requests_total"
                and sample.labels.get("key") == key
            ):
                return sample.value
    return 0.0


async def test_every_rate_limited_call_is_counted_once(
    gateway: GatewayServer, connect: Connect
) -> None:
    stub = connect(gateway)
    slow = bearer("key-slow")
    assert (await stub.ServerLive(pb.ServerLiveRequest(), metadata=slow)).live  # the burst
    calls = [
        stub.ServerLive(pb.ServerLiveRequest(), metadata=slow, timeout=10),
        stub.ServerLive(pb.ServerLiveRequest(), metadata=slow, timeout=10),
        stub.ServerReady(pb.ServerReadyRequest(), metadata=slow, timeout=10),
        stub.ServerMetadata(pb.ServerMetadataRequest(), metadata=slow, timeout=10),
        stub.RepositoryIndex(pb.RepositoryIndexRequest(), metadata=slow, timeout=10),
        stub.ModelMetadata(pb.ModelMetadataRequest(name="pair"), metadata=slow, timeout=10),
        stub.ModelReady(pb.ModelReadyRequest(name="pair"), metadata=slow, timeout=10),
        stub.ModelStatistics(pb.ModelStatisticsRequest(), metadata=slow, timeout=10),
        stub.ModelInfer(pair_request(), metadata=slow, timeout=10),
    ]
    for call in calls:
        assert (await refusal(call)).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await asyncio.to_thread(rate_limited, gateway, "slow") == len(calls)
