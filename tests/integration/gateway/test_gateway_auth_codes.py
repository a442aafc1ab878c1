"""API keys through a real gateway: each rejection's status, and what stays open."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

from services.common.tokens import hash_token
from services.gateway.main import GatewayServer
from services.gateway.settings import GatewaySettings
from tests.integration.gateway.conftest import (
    StartGateway,
    StartInference,
    backend_address,
    pair_request,
)

Connect = Callable[[GatewayServer], pb_grpc.GRPCInferenceServiceStub]
KEYS = f"""
keys:
  - {{id: team-a, sha256: {hash_token("key-a")}, models: [pair]}}
  - {{id: team-b, key: key-b, models: [cnn]}}
  - {{id: team-c, key: key-c, rate_per_second: 0.01, burst: 2}}
"""


def bearer(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


@pytest.fixture
async def gateway(
    start_inference: StartInference, start_gateway: StartGateway, tmp_path: Path
) -> GatewayServer:
    keys = tmp_path / "keys.yaml"
    keys.write_text(KEYS)
    backend = await start_inference()
    return await start_gateway(
        backends=backend_address(backend), api_keys_file=str(keys), api_keys="ops:key-ops"
    )


async def code_of(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value.code()


async def test_keys_allow_limit_and_reject(gateway: GatewayServer, connect: Connect) -> None:
    stub = connect(gateway)
    response = await stub.ModelInfer(pair_request(), metadata=bearer("key-a"), timeout=10)
    assert response.model_name == "pair"
    assert (await stub.ServerReady(pb.ServerReadyRequest(), metadata=bearer("key-ops"))).ready
    unauthenticated = grpc.StatusCode.UNAUTHENTICATED
    assert await code_of(stub.ModelInfer(pair_request(), timeout=10)) == unauthenticated
    wrong = stub.ModelInfer(pair_request(), metadata=bearer("key-z"), timeout=10)
    assert await code_of(wrong) == unauthenticated
    basic = stub.ModelInfer(pair_request(), metadata=(("authorization", "Basic a2V5LWE="),))
    assert await code_of(basic) == unauthenticated
    denied = stub.ModelInfer(pair_request(), metadata=bearer("key-b"), timeout=10)
    assert await code_of(denied) == grpc.StatusCode.PERMISSION_DENIED
    for _ in range(2):  # the burst
        await stub.ModelInfer(pair_request(), metadata=bearer("key-c"), timeout=10)
    limited = stub.ModelInfer(pair_request(), metadata=bearer("key-c"), timeout=10)
    assert await code_of(limited) == grpc.StatusCode.RESOURCE_EXHAUSTED
    # Metadata calls need a key too; the allow-list applies to them.
    meta = stub.ModelMetadata(pb.ModelMetadataRequest(name="pair"), metadata=bearer("key-b"))
    assert await code_of(meta) == grpc.StatusCode.PERMISSION_DENIED
    assert await code_of(stub.ServerMetadata(pb.ServerMetadataRequest())) == unauthenticated


async def test_stream_rejections(gateway: GatewayServer, connect: Connect) -> None:
    stub = connect(gateway)

    async def two():  # type: ignore[no-untyped-def]
        yield pair_request(id="1")
        yield pair_request(id="2")

    # The stream is refused before any request is read.
    refused = stub.ModelStreamInfer(timeout=10)
    assert await refused.code() == grpc.StatusCode.UNAUTHENTICATED
    replies = [r async for r in stub.ModelStreamInfer(two(), metadata=bearer("key-b"))]
    assert all("may not use model 'pair'" in r.error_message for r in replies)
    replies = [r async for r in stub.ModelStreamInfer(two(), metadata=bearer("key-a"))]
    assert [r.error_message for r in replies] == ["", ""]


async def test_health_and_reflection_stay_open(gateway: GatewayServer) -> None:
    address = f"localhost:{gateway.grpc.port}"
    async with grpc.aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING

    def services() -> set[str]:
        with grpc.insecure_channel(address) as channel:
            return set(ProtoReflectionDescriptorDatabase(channel).get_services())

    assert "inference.GRPCInferenceService" in await asyncio.to_thread(services)


def test_no_keys_without_no_auth_is_refused() -> None:
    settings = GatewaySettings(port=0, metrics_port=0, http_port=0, backends="localhost:1")
    with pytest.raises(ValueError, match="no API keys configured"):
        GatewayServer(settings)
