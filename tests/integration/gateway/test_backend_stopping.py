"""A backend that answers CANCELLED cut the call short itself (the gateway's own
caller going away ends the call with CancelledError instead): it is stopping, so the
gateway asks another backend rather than relaying CANCELLED to a client that never
cancelled.

Found by the rolling-restart chaos run: under load, one call in 234 reached the client
as CANCELLED while its replica stopped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from grpc_health.v1 import health_pb2
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

from tests.integration.gateway.conftest import (
    StartGateway,
    StartInference,
    backend_address,
    output,
    pair_request,
    v2_server,
)


@dataclass
class CancellingBackend:
    address: str
    calls: list[int]


@pytest.fixture
async def cancelling_backend(
    start_inference: StartInference,
) -> AsyncIterator[CancellingBackend]:
    """A v2 server that lists a real backend's models but cancels every ModelInfer."""
    inference = await start_inference()
    calls: list[int] = []
    channel = grpc.aio.insecure_channel(backend_address(inference))
    stub = pb_grpc.GRPCInferenceServiceStub(channel)

    async def infer(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        calls.append(1)
        await context.abort(grpc.StatusCode.CANCELLED, "CANCELLED")
        raise AssertionError("abort returned")

    async def index(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        reply = await stub.RepositoryIndex(pb.RepositoryIndexRequest(), timeout=10)
        return reply.SerializeToString()

    server = await v2_server({"ModelInfer": infer, "RepositoryIndex": index})
    # Its health says the model is served, so the gateway sends it calls.
    await server.health.set("pair", health_pb2.HealthCheckResponse.SERVING)
    yield CancellingBackend(f"localhost:{server.port}", calls)
    await server.shutdown(0)
    await channel.close()


@pytest.mark.parametrize("mux", [False, True], ids=["unary", "mux"])
async def test_a_backend_that_cancels_a_call_is_not_the_callers_answer(
    cancelling_backend: CancellingBackend,
    start_inference: StartInference,
    start_gateway: StartGateway,
    mux: bool,
) -> None:
    healthy = backend_address(await start_inference())
    gateway = await start_gateway(
        backends=f"{cancelling_backend.address},{healthy}", backend_mux=mux
    )
    async with grpc.aio.insecure_channel(f"localhost:{gateway.grpc.port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for _ in range(12):
            answer = await stub.ModelInfer(pair_request("1"), timeout=10)
            assert output(answer, "sum").tolist() == [[2.0, 3.0, 4.0, 5.0]]
    # The cancelling backend was asked, and its CANCELLED never reached the caller.
    assert cancelling_backend.calls
