"""Client-chosen model names cost nothing: no metric series, no follower state, no registry call."""

from __future__ import annotations

import asyncio
import collections
import uuid
from collections.abc import Callable
from pathlib import Path

import grpc
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from prometheus_client import CollectorRegistry

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
NAMES = 20_000
SECONDS = 15.0
CONCURRENCY = 64


def series(registry: CollectorRegistry) -> int:
    """How many samples a scrape would carry."""
    return sum(len(metric.samples) for metric in registry.collect())


def snapshot_calls(registry: RegistryServer) -> float:
    """GetSnapshot calls the registry handled, whatever their status."""
    assert registry.server.metrics_registry is not None
    total = 0.0
    for metric in registry.server.metrics_registry.collect():
        for sample in metric.samples:
            if sample.name == "maas_registry_grpc_requests_total" and sample.labels.get(
                "method", ""
            ).endswith("/GetSnapshot"):
                total += sample.value
    return total


async def random_names(stub: pb_grpc.GRPCInferenceServiceStub, count: int, seconds: float) -> int:
    """Send up to `count` requests naming random models, for at most `seconds`; how many
    were sent. Each must be NOT_FOUND."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    codes: collections.Counter[grpc.StatusCode | None] = collections.Counter()

    async def worker() -> None:
        while codes.total() < count and loop.time() < end:
            request = pb.ModelInferRequest(model_name=f"m-{uuid.uuid4().hex}")
            try:
                await stub.ModelInfer(request, timeout=10)
                codes[grpc.StatusCode.OK] += 1
            except grpc.aio.AioRpcError as exc:
                codes[exc.code()] += 1

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    assert set(codes) == {grpc.StatusCode.NOT_FOUND}, codes
    return codes.total()


async def test_random_names_through_a_registry_gateway_cost_the_registry_nothing(
    pair_in_registry: RegistryClient,
    registry: RegistryServer,
    start_inference: StartInference,
    start_gateway: StartGateway,
    connect: Connect,
    test_models: Path,
) -> None:
    backend = await start_inference()
    gateway = await start_gateway(
        registry=registry_address(registry),
        registry_token=READER,
        backends=backend_address(backend),
    )
    stub = connect(gateway)
    await stub.ModelInfer(pair_request(), timeout=10)
    await random_names(stub, 200, SECONDS)  # every code and label set seen once
    before = series(gateway.metrics_registry), snapshot_calls(registry)
    sent = await random_names(stub, NAMES, SECONDS)
    after = series(gateway.metrics_registry), snapshot_calls(registry)
    print(
        f"registry mode: {sent} random names; series {before[0]} -> {after[0]}, "
        f"registry Snapshot calls {before[1]} -> {after[1]}"
    )
    assert sent >= 2000 and before[1] >= 1  # the gateway's own snapshot at start
    assert after == before
    assert gateway.routes is not None and set(gateway.routes.models) == {"pair"}
    assert gateway.follower is not None and not gateway.follower._reading
    # A model created later is learnt through Watch, without a request asking for it.
    await pair_in_registry.upload("late", test_models / "pair" / "1" / "model.onnx")
    for _ in range(200):
        index = await stub.RepositoryIndex(pb.RepositoryIndexRequest(), timeout=10)
        if "late" in {m.name for m in index.models}:
            break
        await asyncio.sleep(0.05)
    assert "late" in {m.name for m in index.models}


async def test_random_names_through_a_static_gateway_add_no_metric_series(
    start_inference: StartInference, start_gateway: StartGateway, connect: Connect
) -> None:
    backend = await start_inference()
    gateway = await start_gateway(backends=backend_address(backend))
    stub = connect(gateway)
    await stub.ModelInfer(pair_request(), timeout=10)
    await random_names(stub, 200, SECONDS)
    before = series(gateway.metrics_registry)
    sent = await random_names(stub, NAMES, SECONDS)
    after = series(gateway.metrics_registry)
    print(f"static mode: {sent} random names; series {before} -> {after}")
    assert sent >= 2000
    assert after == before
