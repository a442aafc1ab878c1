"""ModelStatistics through a real gateway sums every backend that serves the model
(services.gateway.statistics): two inference servers, requests spread by the balancer."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

from services.gateway.main import GatewayServer
from services.gateway.statistics import summed
from services.inference.main import InferenceServer
from tests.integration.gateway.conftest import (
    StartGateway,
    StartInference,
    backend_address,
    pair_request,
)
from tests.servers import ServiceProcess

Connect = Callable[[GatewayServer], pb_grpc.GRPCInferenceServiceStub]
REQUESTS = 60
KEYS = """
keys:
  - {id: pair-only, key: key-pair, models: [pair]}
"""


@pytest.fixture
def two_models(pair_repository: Path) -> Path:
    """The pair repository with a second model, `other` (the same file)."""
    shutil.copytree(pair_repository / "pair", pair_repository / "other")
    return pair_repository


@pytest.fixture
async def direct() -> AsyncIterator[Callable[[InferenceServer], pb_grpc.GRPCInferenceServiceStub]]:
    """Stubs straight to inference servers, around the gateway."""
    channels: list[grpc.aio.Channel] = []

    def stub(server: InferenceServer) -> pb_grpc.GRPCInferenceServiceStub:
        channel = grpc.aio.insecure_channel(backend_address(server))
        channels.append(channel)
        return pb_grpc.GRPCInferenceServiceStub(channel)

    yield stub
    for channel in channels:
        await channel.close()


def by_key(reply: pb.ModelStatisticsResponse) -> dict[tuple[str, str], pb.ModelStatistics]:
    return {(s.name, s.version): s for s in reply.model_stats}


async def test_statistics_are_the_sum_of_every_backend(
    start_inference: StartInference,
    start_gateway: StartGateway,
    connect: Connect,
    direct: Callable[[InferenceServer], pb_grpc.GRPCInferenceServiceStub],
) -> None:
    first, second = await start_inference(), await start_inference()
    gateway = await start_gateway(backends=f"{backend_address(first)},{backend_address(second)}")
    stub = connect(gateway)
    for _ in range(3):
        await asyncio.gather(
            *(stub.ModelInfer(pair_request(), timeout=10) for _ in range(REQUESTS // 3))
        )
    ask = pb.ModelStatisticsRequest(name="pair")
    own = [await direct(s).ModelStatistics(ask, timeout=10) for s in (first, second)]
    counts = [sum(s.inference_count for s in reply.model_stats) for reply in own]
    assert sum(counts) == REQUESTS
    assert min(counts) > 0, counts  # the balancer spread them: one backend alone is not N

    through = await stub.ModelStatistics(ask, timeout=10)
    assert sum(s.inference_count for s in through.model_stats) == REQUESTS
    assert through == summed(own)
    answered = by_key(through)
    version = next(k for k, s in answered.items() if s.inference_count)
    total, parts = answered[version], [by_key(r).get(version) for r in own]
    assert total.execution_count == sum(p.execution_count for p in parts if p)
    success = total.inference_stats.success
    assert success.count == REQUESTS
    assert success.ns == sum(p.inference_stats.success.ns for p in parts if p)
    assert total.last_inference == max(p.last_inference for p in parts if p)
    batched = sum(b.batch_size * b.compute_infer.count for b in total.batch_stats)
    assert batched == REQUESTS  # every request is in some batch, whichever backend ran it

    # The numbered form asks for that version on both; the all-models form, every model.
    numbered = pb.ModelStatisticsRequest(name="pair", version=version[1])
    one = await stub.ModelStatistics(numbered, timeout=10)
    assert [s.inference_count for s in one.model_stats] == [REQUESTS]
    every = await stub.ModelStatistics(pb.ModelStatisticsRequest(), timeout=10)
    assert sum(s.inference_count for s in every.model_stats) == REQUESTS
    # The HTTP front end takes the same path.
    url = f"http://localhost:{gateway.http_port}/v2/models/pair/stats"
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read())
    assert sum(s["inference_count"] for s in json.loads(body)["model_stats"]) == REQUESTS


async def test_the_allow_list_still_cuts_the_summed_answer(
    start_inference: StartInference,
    start_gateway: StartGateway,
    connect: Connect,
    two_models: Path,
    tmp_path: Path,
) -> None:
    keys = tmp_path / "keys.yaml"
    keys.write_text(KEYS)
    first, second = await start_inference(two_models), await start_inference(two_models)
    gateway = await start_gateway(
        backends=f"{backend_address(first)},{backend_address(second)}", api_keys_file=str(keys)
    )
    stub = connect(gateway)
    bearer = (("authorization", "Bearer key-pair"),)
    await asyncio.gather(
        *(stub.ModelInfer(pair_request(), timeout=10, metadata=bearer) for _ in range(20))
    )
    every = await stub.ModelStatistics(pb.ModelStatisticsRequest(), timeout=10, metadata=bearer)
    assert {s.name for s in every.model_stats} == {"pair"}
    assert sum(s.inference_count for s in every.model_stats) == 20


async def test_a_dead_backend_leaves_the_sum_of_the_rest(
    start_inference: StartInference,
    start_gateway: StartGateway,
    connect: Connect,
    direct: Callable[[InferenceServer], pb_grpc.GRPCInferenceServiceStub],
) -> None:
    first, second = await start_inference(), await start_inference()
    gateway = await start_gateway(backends=f"{backend_address(first)},{backend_address(second)}")
    stub = connect(gateway)
    await asyncio.gather(*(stub.ModelInfer(pair_request(), timeout=10) for _ in range(40)))
    ask = pb.ModelStatisticsRequest(name="pair")
    survivor = await direct(second).ModelStatistics(ask, timeout=10)
    # Stopped: whether the gateway has yet heard (its health Watch) or its call fails,
    # the answer is the survivor's count.
    await first.shutdown(0)
    through = await stub.ModelStatistics(ask, timeout=10)
    assert summed([through]) == summed([survivor])
    assert sum(s.inference_count for s in through.model_stats) < 40


async def test_a_hung_backend_leaves_the_sum_of_the_rest_within_the_deadline(
    start_inference: StartInference,
    start_gateway: StartGateway,
    connect: Connect,
    direct: Callable[[InferenceServer], pb_grpc.GRPCInferenceServiceStub],
    pair_repository: Path,
    tmp_path: Path,
) -> None:
    healthy = await start_inference()
    args = ["--model-repository", str(pair_repository), "--metrics-port", "0"]
    hung = ServiceProcess("inference", args, tmp_path)
    try:
        gateway = await start_gateway(backends=f"{backend_address(healthy)},{hung.address}")
        stub = connect(gateway)
        await asyncio.gather(*(stub.ModelInfer(pair_request(), timeout=10) for _ in range(40)))
        ask = pb.ModelStatisticsRequest(name="pair")
        before = await stub.ModelStatistics(ask, timeout=10)
        assert sum(s.inference_count for s in before.model_stats) == 40
        own = await direct(healthy).ModelStatistics(ask, timeout=10)
        assert sum(s.inference_count for s in own.model_stats) < 40  # the hung one ran some
        # Stopped, not gone: the gateway still counts it healthy, and its call hangs.
        os.kill(hung.process.pid, signal.SIGSTOP)
        through = await stub.ModelStatistics(ask, timeout=2)
        assert summed([through]) == summed([own])
    finally:
        os.kill(hung.process.pid, signal.SIGCONT)
        hung.stop()
