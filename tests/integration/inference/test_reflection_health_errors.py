"""Reflection, health and the error mapping, through real servers on port 0."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

from services.common.errors import NotFound
from services.common.server import GrpcServer, ServiceBinding
from services.common.settings import ServiceSettings
from services.inference.main import InferenceServer
from services.inference.settings import InferenceSettings


async def test_reflection_lists_services(inference_server: InferenceServer) -> None:
    def ask() -> tuple[set[str], str]:
        # grpcio-reflection's client side is synchronous: run it off the server's loop.
        with grpc.insecure_channel(f"localhost:{inference_server.grpc.port}") as channel:
            database = ProtoReflectionDescriptorDatabase(channel)
            services = set(database.get_services())
            found = database.FindFileContainingSymbol("inference.GRPCInferenceService")
            return services, found.package

    services, package = await asyncio.to_thread(ask)
    assert {
        "inference.GRPCInferenceService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= services
    assert package == "inference"


async def test_health_for_server_and_each_model(channel: grpc.aio.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    serving = health_pb2.HealthCheckResponse.SERVING
    assert (await stub.Check(health_pb2.HealthCheckRequest(service=""))).status == serving
    assert (await stub.Check(health_pb2.HealthCheckRequest(service="cnn"))).status == serving
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Check(health_pb2.HealthCheckRequest(service="no-such-model"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_unloaded_model_health_is_not_serving(
    inference_server: InferenceServer, channel: grpc.aio.Channel
) -> None:
    await inference_server.manager.unload_version("cnn", 1)
    stub = health_pb2_grpc.HealthStub(channel)
    response = await stub.Check(health_pb2.HealthCheckRequest(service="cnn"))
    assert response.status == health_pb2.HealthCheckResponse.NOT_SERVING
    infer = pb_grpc.GRPCInferenceServiceStub(channel)
    ready = await infer.ModelReady(pb.ModelReadyRequest(name="cnn"))
    assert not ready.ready


def _boom(request: bytes, context: object) -> bytes:
    raise RuntimeError("secret detail /etc/shadow")


async def _not_found(request: bytes, context: object) -> bytes:
    raise NotFound("model 'x' is not here")


async def _stream_boom(request: bytes, context: object) -> AsyncIterator[bytes]:
    yield b"first"
    raise RuntimeError("secret stream detail")


@pytest.fixture
async def test_server() -> AsyncIterator[GrpcServer]:
    """A bare GrpcServer with handlers that fail, to test the one error mapping."""
    identity = {"request_deserializer": None, "response_serializer": None}
    handler = grpc.method_handlers_generic_handler(
        "test.Errors",
        {
            "Boom": grpc.unary_unary_rpc_method_handler(_boom_async, **identity),
            "NotFound": grpc.unary_unary_rpc_method_handler(_not_found, **identity),
            "StreamBoom": grpc.unary_stream_rpc_method_handler(_stream_boom, **identity),
        },
    )
    server = GrpcServer(
        ServiceSettings(port=0),
        [ServiceBinding("test.Errors", lambda s: s.add_generic_rpc_handlers([handler]))],
    )
    await server.start()
    yield server
    await server.shutdown(0)


async def _boom_async(request: bytes, context: object) -> bytes:
    return _boom(request, context)


async def test_error_mapping(test_server: GrpcServer) -> None:
    async with grpc.aio.insecure_channel(f"localhost:{test_server.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary("/test.Errors/Boom")(b"x")
        assert caught.value.code() == grpc.StatusCode.INTERNAL
        assert caught.value.details() == "internal error"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary("/test.Errors/NotFound")(b"x")
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert caught.value.details() == "model 'x' is not here"
        call = channel.unary_stream("/test.Errors/StreamBoom")(b"x")
        received = []
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for item in call:
                received.append(item)
        assert received == [b"first"]
        assert caught.value.code() == grpc.StatusCode.INTERNAL
        assert "secret" not in caught.value.details()


@pytest.fixture
async def slow_server(make_repository: Callable[..., Path]) -> AsyncIterator[InferenceServer]:
    """The slow model taking 512-row requests (more than max_batch_size are refused)."""
    root = make_repository("slow")
    (root / "slow" / "config.yaml").write_text("dynamic_batching: {max_batch_size: 512}\n")
    settings = InferenceSettings(port=0, metrics_port=0, model_repository=str(root))
    server = InferenceServer(settings)
    await server.start()
    yield server
    await server.shutdown(0)


async def test_expired_deadline_is_never_run(slow_server: InferenceServer) -> None:
    async with grpc.aio.insecure_channel(f"localhost:{slow_server.grpc.port}") as channel:
        await _expired_deadline_is_never_run(slow_server, channel)


async def _expired_deadline_is_never_run(
    inference_server: InferenceServer, channel: grpc.aio.Channel
) -> None:
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    model = inference_server.manager.resolve("slow", "")
    request = pb.ModelInferRequest(model_name="slow")
    request.inputs.add(name="x", datatype="FP32", shape=[512, 1024])
    request.raw_input_contents.append(b"\0" * 512 * 1024 * 4)
    # Occupy the only instance, then queue a request that expires while waiting.
    busy = [stub.ModelInfer(request) for _ in range(3)]
    # The expired request must find them admitted already, not overtake them.
    loop = asyncio.get_running_loop()
    give_up = loop.time() + 30
    while model.inflight < 3 and loop.time() < give_up:
        await asyncio.sleep(0.005)
    assert model.inflight >= 3
    before = model.stats.execution_count
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ModelInfer(request, timeout=0.01)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    for call in busy:
        await call
    assert model.stats.execution_count - before <= 3
