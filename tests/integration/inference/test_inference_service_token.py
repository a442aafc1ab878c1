"""Inference asks for a service token of its own (issue B, item 8).

With `maas up --auth`, ModelInfer sent straight to the inference port with no
key succeeded: only the gateway checked keys. Inference configured with a service
token now refuses every call without it (UNAUTHENTICATED), health and reflection
excepted, and a gateway given the token serves as before.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

from services.common.tokens import hash_token
from services.gateway.main import GatewayServer
from services.gateway.settings import GatewaySettings
from services.inference.main import InferenceServer
from tests.integration.conftest import StartInferenceAt

TOKEN = "service-secret"
SERVICE = "inference.GRPCInferenceService"


def pair_request() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="pair")
    for name in ("a", "b"):
        request.inputs.add(name=name, datatype="FP32", shape=[1, 4])
    request.raw_input_contents.extend([np.ones((1, 4), np.float32).tobytes()] * 2)
    return request


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture
def start_inference(
    make_repository: Callable[..., Path], start_inference_at: StartInferenceAt
) -> Callable[..., Awaitable[InferenceServer]]:
    repository = make_repository("pair")
    return functools.partial(start_inference_at, repository)


@pytest.fixture
async def inference(
    start_inference: Callable[..., Awaitable[InferenceServer]],
) -> InferenceServer:
    return await start_inference(service_token=TOKEN)


@pytest.fixture
async def channel(inference: InferenceServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"localhost:{inference.grpc.port}") as channel:
        yield channel


async def code_of(call: Awaitable[Any]) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize(
    "metadata",
    [(), bearer("wrong"), (("authorization", TOKEN),), bearer("x" * 5000)],
    ids=["none", "wrong", "no-scheme", "oversized"],
)
async def test_every_inference_rpc_without_the_token_is_unauthenticated(
    channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...]
) -> None:
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    calls = [
        stub.ModelInfer(pair_request(), metadata=metadata),
        stub.ServerLive(pb.ServerLiveRequest(), metadata=metadata),
        stub.ModelMetadata(pb.ModelMetadataRequest(name="pair"), metadata=metadata),
        stub.RepositoryIndex(pb.RepositoryIndexRequest(), metadata=metadata),
        stub.ModelStatistics(pb.ModelStatisticsRequest(), metadata=metadata),
    ]
    for call in calls:
        assert await code_of(call) is grpc.StatusCode.UNAUTHENTICATED
    stream = stub.ModelStreamInfer(iter([pair_request()]), metadata=metadata)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in stream:
            pass
    assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "token" in (info.value.details() or "")


async def test_the_token_is_accepted(channel: grpc.aio.Channel) -> None:
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    reply = await stub.ModelInfer(pair_request(), metadata=bearer(TOKEN))
    assert reply.model_name == "pair"
    replies = [
        r async for r in stub.ModelStreamInfer(iter([pair_request()]), metadata=bearer(TOKEN))
    ]
    assert [r.error_message for r in replies] == [""]


async def test_health_and_reflection_stay_open(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", SERVICE, "pair"):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    replies = [r async for r in reflection.ServerReflectionInfo(iter([request]))]
    names = {s.name for s in replies[0].list_services_response.service}
    assert SERVICE in names


async def test_a_tokens_file_holds_digests(
    start_inference: Callable[..., Awaitable[InferenceServer]], tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(yaml.safe_dump({"tokens": [{"id": "gw", "sha256": hash_token(TOKEN)}]}))
    server = await start_inference(service_tokens_file=str(tokens))
    async with grpc.aio.insecure_channel(f"localhost:{server.grpc.port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert await code_of(stub.ServerLive(pb.ServerLiveRequest())) is (
            grpc.StatusCode.UNAUTHENTICATED
        )
        assert (await stub.ServerLive(pb.ServerLiveRequest(), metadata=bearer(TOKEN))).live


async def test_without_a_token_configured_every_call_is_accepted(
    start_inference: Callable[..., Awaitable[InferenceServer]],
) -> None:
    server = await start_inference()
    async with grpc.aio.insecure_channel(f"localhost:{server.grpc.port}") as channel:
        reply = await pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(pair_request())
        assert reply.model_name == "pair"


async def start_gateway(inference: InferenceServer, **overrides: Any) -> GatewayServer:
    gateway = GatewayServer(
        GatewaySettings(
            port=0,
            metrics_port=0,
            http_port=0,
            host="localhost",
            backends=f"localhost:{inference.grpc.port}",
            no_auth=True,
            grace_seconds=0,
            ready_wait_seconds=0.5,
            **overrides,
        )
    )
    await gateway.start()
    return gateway


async def test_a_gateway_with_the_token_serves_every_call(inference: InferenceServer) -> None:
    gateway = await start_gateway(inference, backend_token=TOKEN)
    try:
        async with grpc.aio.insecure_channel(f"localhost:{gateway.grpc.port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            assert (await stub.ModelInfer(pair_request())).model_name == "pair"
            index = await stub.RepositoryIndex(pb.RepositoryIndexRequest())
            assert [(m.name, m.state) for m in index.models] == [("pair", "READY")]
            replies = [r async for r in stub.ModelStreamInfer(iter([pair_request()] * 3))]
            assert [r.error_message for r in replies] == [""] * 3
    finally:
        await gateway.shutdown(0)


async def test_a_gateway_without_the_token_cannot_serve(inference: InferenceServer) -> None:
    gateway = await start_gateway(inference)
    try:
        async with grpc.aio.insecure_channel(f"localhost:{gateway.grpc.port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            # The backend's UNAUTHENTICATED is about the gateway's token, not the caller's
            # key: the caller is told no backend could serve, not that it lacks a credential.
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.ModelInfer(pair_request(), timeout=5)
            assert info.value.code() is grpc.StatusCode.UNAVAILABLE, info.value.details()
            assert "service token" not in (info.value.details() or "")
    finally:
        await gateway.shutdown(0)
