"""Routing through real servers: registry resolution, Watch updates, canary splits, pins."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

from services.common.route_version import VERSION_HEADER_FROM
from services.common.wirefmt import encode_varint
from services.gateway.main import GatewayServer
from services.inference.main import InferenceServer
from services.inference.settings import InferenceSettings
from services.registry.client import RegistryClient
from services.registry.main import RegistryServer
from tests.integration.conftest import READER
from tests.integration.gateway.conftest import (
    StartGateway,
    StartInference,
    backend_address,
    output,
    pair_request,
    registry_address,
)

Connect = Callable[[GatewayServer], pb_grpc.GRPCInferenceServiceStub]


async def infer_version(
    stub: pb_grpc.GRPCInferenceServiceStub, version: str = "", metadata: tuple = ()
) -> str:
    """Infer once; the version that answered, checked against the response header."""
    call = stub.ModelInfer(pair_request(version), metadata=metadata, timeout=10)
    response = await call
    header = dict(await call.trailing_metadata())["x-maas-version"]
    assert header == response.model_version
    return response.model_version


@pytest.fixture
async def routed(
    pair_in_registry: RegistryClient,
    registry: RegistryServer,
    start_inference: StartInference,
    start_gateway: StartGateway,
) -> GatewayServer:
    backend = await start_inference()
    return await start_gateway(
        registry=registry_address(registry),
        registry_token=READER,
        backends=backend_address(backend),
    )


async def test_infer_resolves_numbers_aliases_and_default(
    routed: GatewayServer, connect: Connect
) -> None:
    stub = connect(routed)
    response = await stub.ModelInfer(pair_request(rows=2), timeout=10)
    np.testing.assert_array_equal(output(response, "sum"), [[2, 3, 4, 5]] * 2)
    np.testing.assert_array_equal(output(response, "diff"), [[0, 1, 2, 3]] * 2)
    assert response.model_version == "1"  # empty: the production alias
    assert await infer_version(stub, "2") == "2"
    assert await infer_version(stub, "production") == "1"
    assert await infer_version(stub, "latest") == "2"
    for version, model in (("no-such-alias", "pair"), ("", "nope"), ("7", "pair")):
        request = pair_request(version)
        request.model_name = model
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ModelInfer(request, timeout=10)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_metadata_calls_resolve_the_version(routed: GatewayServer, connect: Connect) -> None:
    stub = connect(routed)
    meta = await stub.ModelMetadata(pb.ModelMetadataRequest(name="pair"), timeout=10)
    assert [t.name for t in meta.inputs] == ["a", "b"]
    assert (await stub.ModelReady(pb.ModelReadyRequest(name="pair", version="latest"))).ready
    assert not (await stub.ModelReady(pb.ModelReadyRequest(name="nope"))).ready
    config = await stub.ModelConfig(pb.ModelConfigRequest(name="pair", version="2"))
    assert config.config.name == "pair"
    stats = await stub.ModelStatistics(pb.ModelStatisticsRequest(name="pair", version="production"))
    assert [s.version for s in stats.model_stats] == ["1"]
    index = await stub.RepositoryIndex(pb.RepositoryIndexRequest())
    assert [(m.name, m.version, m.state) for m in index.models] == [
        ("pair", "1", "READY"),
        ("pair", "2", "READY"),
    ]
    server = await stub.ServerMetadata(pb.ServerMetadataRequest())
    assert server.name == "maas" and "binary_tensor_data" in server.extensions
    assert (await stub.ServerReady(pb.ServerReadyRequest())).ready
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="pair"))
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "registry" in (caught.value.details() or "")


async def test_alias_move_is_followed_without_restart(
    routed: GatewayServer, pair_in_registry: RegistryClient, connect: Connect
) -> None:
    stub = connect(routed)
    assert await infer_version(stub) == "1"
    await pair_in_registry.set_alias("pair", "production", 2)
    for _ in range(100):
        if await infer_version(stub) == "2":
            break
        await asyncio.sleep(0.05)
    assert await infer_version(stub) == "2"
    await pair_in_registry.set_alias("pair", "blue", 1)
    for _ in range(100):
        if "blue" in routed.app.routes.models["pair"].aliases:  # type: ignore[union-attr]
            break
        await asyncio.sleep(0.05)
    assert await infer_version(stub, "blue") == "1"


async def test_canary_file_splits_80_20_and_a_header_pins(
    registry: RegistryServer,
    pair_in_registry: RegistryClient,
    start_inference: StartInference,
    start_gateway: StartGateway,
    connect: Connect,
    tmp_path: Path,
) -> None:
    canary = tmp_path / "canary.yaml"
    canary.write_text("canary:\n  pair: {production: 80, '2': 20}\n")
    backend = await start_inference()
    gateway = await start_gateway(
        registry=registry_address(registry),
        registry_token=READER,
        backends=backend_address(backend),
        canary_file=str(canary),
    )
    stub = connect(gateway)
    counts: collections.Counter[str] = collections.Counter()
    for _ in range(10):
        counts.update(await asyncio.gather(*(infer_version(stub) for _ in range(100))))
    # Binomial(1000, 0.2): the standard deviation is 1.3 points; 5 points is ~4 sigma.
    assert sum(counts.values()) == 1000
    assert 150 <= counts["2"] <= 250, counts
    pinned = await asyncio.gather(
        *(infer_version(stub, metadata=(("x-maas-version", "2"),)) for _ in range(50))
    )
    assert set(pinned) == {"2"}
    # A request that names a version is not split.
    named = await asyncio.gather(*(infer_version(stub, "1") for _ in range(50)))
    assert set(named) == {"1"}


async def test_registry_canary_alias_and_weight_label(
    registry: RegistryServer,
    admin: RegistryClient,
    test_models: Path,
    start_inference: StartInference,
    start_gateway: StartGateway,
    connect: Connect,
) -> None:
    await admin.create_model("pair", labels={"maas.canary.weight": "30"})
    for _ in range(2):
        await admin.upload("pair", test_models / "pair" / "1" / "model.onnx")
    await admin.set_alias("pair", "production", 1)
    await admin.set_alias("pair", "canary", 2)
    backend = await start_inference()
    gateway = await start_gateway(
        registry=registry_address(registry),
        registry_token=READER,
        backends=backend_address(backend),
    )
    stub = connect(gateway)
    versions = await asyncio.gather(*(infer_version(stub) for _ in range(300)))
    share = versions.count("2") / len(versions)
    # Binomial(300, 0.3): the standard deviation is 2.6 points.
    assert 0.2 <= share <= 0.4, share
    assert set(await asyncio.gather(*(infer_version(stub, "1") for _ in range(20)))) == {"1"}


async def test_stream_infer_routes_each_request(routed: GatewayServer, connect: Connect) -> None:
    stub = connect(routed)
    bad = pair_request(id="bad")
    bad.inputs[0].shape[:] = [1, 5]
    requests = [pair_request("2", id="r2"), pair_request(id="r1"), bad]
    nope = pair_request(id="nope")
    nope.model_name = "nope"
    requests.append(nope)

    async def send():  # type: ignore[no-untyped-def]
        for request in requests:
            yield request

    replies = [r async for r in stub.ModelStreamInfer(send(), timeout=10)]
    by_id = {r.infer_response.id: r for r in replies}
    assert set(by_id) == {"r1", "r2", "bad", "nope"}
    assert by_id["r2"].infer_response.model_version == "2" and not by_id["r2"].error_message
    assert by_id["r1"].infer_response.model_version == "1"
    np.testing.assert_array_equal(output(by_id["r1"].infer_response, "sum"), [[2, 3, 4, 5]])
    assert by_id["bad"].error_message and by_id["nope"].error_message
    assert "unknown model 'nope'" in by_id["nope"].error_message


async def test_with_inference_in_registry_mode(
    registry: RegistryServer,
    pair_in_registry: RegistryClient,
    test_models: Path,
    start_gateway: StartGateway,
    connect: Connect,
    tmp_path: Path,
) -> None:
    """The whole chain following one registry: a new production version needs no restart."""
    backend = InferenceServer(
        InferenceSettings(
            port=0,
            metrics_port=0,
            host="localhost",
            registry=registry_address(registry),
            registry_token=READER,
            cache_dir=str(tmp_path / "cache"),
            grace_seconds=0,
        )
    )
    await backend.start()
    try:
        gateway = await start_gateway(
            registry=registry_address(registry),
            registry_token=READER,
            backends=backend_address(backend),
        )
        stub = connect(gateway)
        assert await infer_version(stub) == "1"
        assert await infer_version(stub, "production") == "1"
        await pair_in_registry.upload("pair", test_models / "pair" / "1" / "model.onnx")
        await pair_in_registry.set_alias("pair", "production", 3)
        answered = ""
        for _ in range(200):
            # Version 1 answers until the backend has version 3 loaded: no request fails.
            answered = await infer_version(stub)
            assert answered in ("1", "3")
            if answered == "3":
                break
            await asyncio.sleep(0.05)
        assert answered == "3"
        assert set(await asyncio.gather(*(infer_version(stub) for _ in range(20)))) == {"3"}
    finally:
        await backend.shutdown(0)


def _padded(request: pb.ModelInferRequest, size: int) -> bytes:
    """`request` made exactly `size` bytes by an unknown length-delimited field (15):
    a large request whose tensors stay small."""
    body = request.SerializeToString() + encode_varint(15 << 3 | 2)
    width = next(w for w in range(1, 11) if len(encode_varint(size - len(body) - w)) == w)
    length = size - len(body) - width
    data = body + encode_varint(length) + b"\0" * length
    assert len(data) == size
    return data


# Exactly the threshold still goes as a Forward frame (services.gateway.mux takes up
# to 1 MiB); twice it goes unary.
@pytest.mark.parametrize("size", [VERSION_HEADER_FROM, 2 * VERSION_HEADER_FROM])
async def test_a_large_request_is_served_the_version_the_gateway_decided(
    routed: GatewayServer, size: int
) -> None:
    # From VERSION_HEADER_FROM bytes the decided version goes in metadata, not written
    # into the body: the backend (a model directory, which would serve its newest for
    # an empty version) must still serve production (1), and a pin.
    address = f"localhost:{routed.grpc.port}"
    async with grpc.aio.insecure_channel(address) as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        for version, pin, served in (("", None, "1"), ("production", None, "1"), ("", "2", "2")):
            data = _padded(pair_request(version), size)
            metadata = (("x-maas-version", pin),) if pin else ()
            reply = pb.ModelInferResponse.FromString(await infer(data, metadata=metadata))
            assert reply.model_version == served, (version, pin)
            np.testing.assert_array_equal(output(reply, "sum"), [[2, 3, 4, 5]])
