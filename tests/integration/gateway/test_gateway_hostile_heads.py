"""Hostile request heads through a real gateway (issue 11, items 1, 13, 14 and 16).

The head of every request (model name, version, id) is read before anything else
the gateway does: it must cost time bounded by its fields, not the message's
bytes; it must read what the backend will read; and a name or version that
cannot name anything is the client's error, decided before any registry call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

from services.gateway import wire
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
)

Connect = Callable[[GatewayServer], pb_grpc.GRPCInferenceServiceStub]
INFER = "/inference.GRPCInferenceService/ModelInfer"
KEYS = """
keys:
  - {id: ops, key: key-ops}
  - {id: other, key: key-other, models: [othermodel]}
"""
OPS = (("authorization", "Bearer key-ops"),)
OTHER = (("authorization", "Bearer key-other"),)
# The make-test bound for a stall seen by a concurrent probe.
STALL_BOUND_S = 1.0


def registry_calls(registry: RegistryServer) -> float:
    """Unary registry calls handled so far (a Watch is counted only when it ends)."""
    assert registry.server.metrics_registry is not None
    total = 0.0
    for metric in registry.server.metrics_registry.collect():
        for sample in metric.samples:
            method = sample.labels.get("method", "")
            if sample.name == "maas_registry_grpc_requests_total" and "Watch" not in method:
                total += sample.value
    return total


@pytest.fixture
async def gateway(
    pair_in_registry: RegistryClient,
    registry: RegistryServer,
    start_inference: StartInference,
    start_gateway: StartGateway,
    tmp_path: Path,
) -> GatewayServer:
    """A gateway following the registry, with keys: `ops` for every model, `other` for
    `othermodel` only."""
    keys = tmp_path / "keys.yaml"
    keys.write_text(KEYS)
    backend = await start_inference()
    return await start_gateway(
        registry=registry_address(registry),
        registry_token=READER,
        backends=backend_address(backend),
        api_keys_file=str(keys),
    )


async def failure(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value


async def test_padding_request_is_refused_without_stalling_other_clients(
    gateway: GatewayServer, connect: Connect
) -> None:
    # Issue 11, item 1: 16 Mi one-byte fields (32 MB) stalled the event loop ~10 s.
    probe = connect(gateway)
    await probe.ServerLive(pb.ServerLiveRequest(), metadata=OPS, timeout=10)
    hostile = pb.ModelInferRequest(model_name="pair").SerializeToString() + b"\x78\x00" * (16 << 20)
    async with grpc.aio.insecure_channel(f"localhost:{gateway.grpc.port}") as channel:
        send = channel.unary_unary(INFER)  # no serializer: the bytes go as they are
        task = asyncio.ensure_future(send(hostile, metadata=OPS, timeout=60))
        loop = asyncio.get_running_loop()
        probes, longest = 0, 0.0
        while not task.done() or probes == 0:
            started = loop.time()
            await probe.ServerLive(pb.ServerLiveRequest(), metadata=OPS, timeout=30)
            longest = max(longest, loop.time() - started)
            probes += 1
        error = await failure(task)
    print(f"padding request: {probes} probes, longest {longest * 1000:.1f} ms")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "at most 4096 top-level fields" in (error.details() or "")
    assert longest <= STALL_BOUND_S


async def test_a_second_model_name_after_the_tensors_cannot_pass_the_allow_list(
    gateway: GatewayServer, connect: Connect
) -> None:
    # Protobuf keeps the last model_name: a key for `othermodel` could name it first
    # and `pair` after the tensors.
    stub = connect(gateway)
    denied = await failure(stub.ModelInfer(pair_request(), metadata=OTHER, timeout=10))
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
    request = pair_request()
    request.model_name = "othermodel"
    data = request.SerializeToString() + wire.string_field(wire.NAME, "pair")
    assert pb.ModelInferRequest.FromString(data).model_name == "pair"
    async with grpc.aio.insecure_channel(f"localhost:{gateway.grpc.port}") as channel:
        send = channel.unary_unary(INFER)
        for metadata in (OTHER, OPS):
            error = await failure(send(data, metadata=metadata, timeout=10))
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "model name (field 1) appears more than once" in (error.details() or "")
        twice = pair_request("1").SerializeToString() + wire.string_field(wire.VERSION, "2")
        error = await failure(send(twice, metadata=OPS, timeout=10))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "model version (field 2) appears more than once" in (error.details() or "")


BAD_NAMES = [
    ("digits ", "invalid model name 'digits '"),
    ("dig\0its", "invalid model name 'dig\\x00its'"),
    ("../../etc/passwd", "invalid model name '../../etc/passwd'"),
    ("é", "ASCII"),
    ("n" * 200, "expected at most 128 characters, got 200"),
    ("n" * 65536, "expected at most 128 characters, got 65536 bytes"),
]


@pytest.mark.parametrize(("name", "expected"), BAD_NAMES)
async def test_bad_model_names_are_invalid_arguments_decided_before_the_registry(
    gateway: GatewayServer, registry: RegistryServer, connect: Connect, name: str, expected: str
) -> None:
    # Issue 11, item 13: these were UNAVAILABLE "the model registry is unreachable
    # (INVALID_ARGUMENT)", and 64 KB names RESOURCE_EXHAUSTED.
    stub = connect(gateway)
    await stub.ModelInfer(pair_request(), metadata=OPS, timeout=10)
    before = registry_calls(registry)
    request = pair_request(id="bad")
    request.model_name = name
    calls = [
        stub.ModelInfer(request, metadata=OPS, timeout=10),
        stub.ModelMetadata(pb.ModelMetadataRequest(name=name), metadata=OPS, timeout=10),
        stub.ModelReady(pb.ModelReadyRequest(name=name), metadata=OPS, timeout=10),
        stub.ModelConfig(pb.ModelConfigRequest(name=name), metadata=OPS, timeout=10),
        stub.ModelStatistics(pb.ModelStatisticsRequest(name=name), metadata=OPS, timeout=10),
    ]
    for call in calls:
        error = await failure(call)
        details = error.details() or ""
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, details[:200]
        assert expected in details and len(details) < 300
    # On a stream, the bad request gets its own error and the others are answered.
    sent = [pair_request(id="before"), request, pair_request(id="after")]
    stream = stub.ModelStreamInfer(iter(sent), metadata=OPS)
    errors = {r.infer_response.id: r.error_message async for r in stream}
    assert errors.keys() == {"before", "bad", "after"}
    assert not errors["before"] and not errors["after"]
    assert expected in errors["bad"] and len(errors["bad"]) < 300
    assert registry_calls(registry) == before


async def test_empty_name_still_asks_statistics_about_every_model(
    gateway: GatewayServer, connect: Connect
) -> None:
    stub = connect(gateway)
    await stub.ModelInfer(pair_request(), metadata=OPS, timeout=10)
    reply = await stub.ModelStatistics(pb.ModelStatisticsRequest(), metadata=OPS, timeout=10)
    assert "pair" in {s.name for s in reply.model_stats}


BAD_VERSIONS = [
    ("1" * 5000, "is too long: expected at most 64 characters, got 5000"),
    ("²", "expected a version number in ASCII digits"),
    ("01", "expected a version number in ASCII digits"),
    ("\u0661", "expected a version number in ASCII digits"),  # Arabic-Indic one
    ("prod\0", "expected a version number, an alias, 'latest' or empty"),
]


@pytest.mark.parametrize(("version", "expected"), BAD_VERSIONS)
async def test_bad_versions_and_pins_are_invalid_arguments_naming_the_field(
    gateway: GatewayServer, connect: Connect, version: str, expected: str
) -> None:
    # Issue 11, items 14 and 16: "1" x 5000 and "²" were INTERNAL; "01" and "١"
    # resolved to version 1.
    stub = connect(gateway)
    error = await failure(stub.ModelInfer(pair_request(version), metadata=OPS, timeout=10))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "model version" in (error.details() or "") and expected in (error.details() or "")
    metadata = pb.ModelMetadataRequest(name="pair", version=version)
    error = await failure(stub.ModelMetadata(metadata, metadata=OPS, timeout=10))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "model version" in (error.details() or "")
    if not version.isascii() or not version.isprintable():
        return  # a gRPC client sends only printable ASCII in a text metadata value
    pinned = (*OPS, ("x-maas-version", version))
    error = await failure(stub.ModelInfer(pair_request(), metadata=pinned, timeout=10))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "x-maas-version header" in (error.details() or "")
    assert expected in (error.details() or "")
    stream = stub.ModelStreamInfer(iter([pair_request()]), metadata=pinned, timeout=10)
    error = await failure(stream.read())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_canonical_versions_and_pins_still_route(
    gateway: GatewayServer, connect: Connect
) -> None:
    stub = connect(gateway)
    for version in ("1", "2", "latest", "production", ""):
        reply = await stub.ModelInfer(pair_request(version), metadata=OPS, timeout=10)
        assert reply.model_version in ("1", "2")
    pinned = (*OPS, ("x-maas-version", "2"))
    reply = await stub.ModelInfer(pair_request(), metadata=pinned, timeout=10)
    assert reply.model_version == "2"
