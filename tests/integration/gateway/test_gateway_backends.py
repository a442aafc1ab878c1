"""Backends through real servers: per-request spread, failover, deadlines, errors."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

from services.common.server import GrpcServer, ServiceBinding
from services.common.settings import ServiceSettings
from services.gateway.balancer import Health
from services.gateway.main import GatewayServer
from services.inference.main import InferenceServer
from tests.integration.gateway.conftest import (
    StartGateway,
    StartInference,
    backend_address,
    pair_request,
    until,
)
from tests.servers import ServiceProcess

Connect = Callable[[GatewayServer], pb_grpc.GRPCInferenceServiceStub]


def served(server: InferenceServer) -> int:
    """Requests a backend answered, by its own statistics."""
    return sum(m.stats.inference_count for m in server.manager.loaded())


async def test_requests_spread_per_request_over_one_channel_each(
    start_inference: StartInference, start_gateway: StartGateway, connect: Connect
) -> None:
    first, second = await start_inference(), await start_inference()
    gateway = await start_gateway(backends=f"{backend_address(first)},{backend_address(second)}")
    stub = connect(gateway)
    for _ in range(4):
        await asyncio.gather(*(stub.ModelInfer(pair_request(), timeout=10) for _ in range(50)))
    counts = served(first), served(second)
    assert sum(counts) == 200
    # One client connection, yet both backends work: balancing is per request.
    assert min(counts) >= 50, counts
    url = f"http://localhost:{gateway.grpc.metrics_port}/metrics"
    text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
    assert 'maas_gateway_backends{health="healthy"} 2.0' in text
    labels = 'canary="false",model="pair",protocol="grpc",version="2"'
    routed = "maas_gateway_routed_requests_total{" + labels + "}"
    assert f"{routed} 200.0" in text
    assert "maas_gateway_inflight_requests 0.0" in text


async def test_a_killed_backend_costs_no_client_a_failure(
    start_inference: StartInference,
    start_gateway: StartGateway,
    connect: Connect,
    pair_repository: Path,
    tmp_path: Path,
) -> None:
    survivor = await start_inference()
    victim = ServiceProcess(
        "inference",
        ["--model-repository", str(pair_repository), "--metrics-port", "0"],
        tmp_path,
    )
    try:
        gateway = await start_gateway(
            backends=f"{backend_address(survivor)},{victim.address}", max_attempts=3
        )
        assert gateway.pool.healthy() == 2
        stub = connect(gateway)
        done = 0

        async def client() -> None:
            nonlocal done
            for _ in range(30):
                await stub.ModelInfer(pair_request(), timeout=10)
                done += 1
                if done == 60:
                    victim.kill()

        await asyncio.gather(*(client() for _ in range(8)))
        assert done == 240
        state = gateway.pool.backends[victim.address].state
        assert state.served > 0
        # The gateway learns of the kill from the connection's end, which may come
        # after the last request if none of them went to the victim after the kill.
        await until(lambda: state.health is not Health.HEALTHY)
        assert served(survivor) + state.served >= 240
    finally:
        victim.stop()


async def test_a_dead_backend_is_ejected_and_never_takes_traffic(
    start_inference: StartInference, start_gateway: StartGateway, connect: Connect
) -> None:
    live = await start_inference()
    gateway = await start_gateway(backends=f"{backend_address(live)},localhost:1")
    stub = connect(gateway)
    await asyncio.gather(*(stub.ModelInfer(pair_request(), timeout=10) for _ in range(20)))
    dead = gateway.pool.backends["localhost:1"].state
    assert dead.health is not Health.HEALTHY and dead.served == 0
    assert served(live) == 20


async def test_backend_errors_pass_through_unchanged(
    start_inference: StartInference, start_gateway: StartGateway, connect: Connect
) -> None:
    backend = await start_inference()
    gateway = await start_gateway(backends=backend_address(backend))
    bad = pair_request()
    bad.inputs[0].datatype = "INT64"
    async with grpc.aio.insecure_channel(backend_address(backend)) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as direct:
            await pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(bad, timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as through:
        await connect(gateway).ModelInfer(bad, timeout=10)
    assert direct.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (through.value.code(), through.value.details()) == (
        direct.value.code(),
        direct.value.details(),
    )


@dataclass
class FakeBackend:
    """A v2 ModelInfer that records what arrives; `hold` makes calls wait until cancelled."""

    server: GrpcServer
    remaining: list[float | None] = field(default_factory=list)
    metadata: list[dict[str, str]] = field(default_factory=list)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    hold: bool = False

    @property
    def address(self) -> str:
        return f"localhost:{self.server.port}"


@pytest.fixture
async def fake_backend() -> AsyncIterator[FakeBackend]:
    fake: FakeBackend

    async def infer(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        fake.remaining.append(context.time_remaining())
        fake.metadata.append(dict(context.invocation_metadata()))
        if fake.hold:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                fake.cancelled.set()
                raise
        parsed = pb.ModelInferRequest.FromString(request)
        reply = pb.ModelInferResponse(model_name=parsed.model_name, model_version="1")
        return reply.SerializeToString()

    name = "inference.GRPCInferenceService"
    handler = grpc.method_handlers_generic_handler(
        name, {"ModelInfer": grpc.unary_unary_rpc_method_handler(infer)}
    )
    server = GrpcServer(
        ServiceSettings(port=0, host="localhost"),
        [ServiceBinding(name, lambda s: s.add_generic_rpc_handlers((handler,)))],
    )
    fake = FakeBackend(server)
    await server.start()
    yield fake
    await server.shutdown(0)


async def test_deadline_and_metadata_reach_the_backend(
    fake_backend: FakeBackend, start_gateway: StartGateway, connect: Connect
) -> None:
    gateway = await start_gateway(backends=fake_backend.address, default_timeout_seconds=7)
    stub = connect(gateway)
    await stub.ModelInfer(
        pair_request(),
        timeout=3,
        metadata=(("x-request-id", "r-1"), ("authorization", "Bearer k"), ("other", "x")),
    )
    await stub.ModelInfer(pair_request())
    with_deadline, without = fake_backend.remaining
    # The wire encodes timeouts coarsely: allow a few milliseconds of rounding.
    assert with_deadline is not None and 2.0 < with_deadline <= 3.05
    assert without is not None and 6.0 < without <= 7.05
    seen = fake_backend.metadata[0]
    assert seen["x-request-id"] == "r-1"
    assert "authorization" not in seen and "other" not in seen


async def test_cancellation_reaches_the_backend(
    fake_backend: FakeBackend, start_gateway: StartGateway, connect: Connect
) -> None:
    gateway = await start_gateway(backends=fake_backend.address)
    fake_backend.hold = True
    call = connect(gateway).ModelInfer(pair_request(), timeout=20)
    for _ in range(100):
        if fake_backend.remaining:
            break
        await asyncio.sleep(0.02)
    call.cancel()
    await asyncio.wait_for(fake_backend.cancelled.wait(), 5)
    assert gateway.pool.backends[fake_backend.address].state.inflight == 0
