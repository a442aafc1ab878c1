"""k6 as a load generator (tools/bench/k6.py): through a real inference service and a
real gateway on port 0, with the digits model, it completes requests without errors and
its summary reads back as positive figures; errors the server returns are counted."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import pytest

from services.gateway.main import GatewayServer
from services.gateway.settings import GatewaySettings
from services.inference.main import InferenceServer
from services.inference.settings import InferenceSettings
from tools.bench import k6, models, servers
from tools.bench.measure import server_counts
from tools.bench.stats import Level

pytestmark = pytest.mark.skipif(k6.binary() is None, reason="the k6 binary is not installed")


@pytest.fixture
async def digits(tmp_path: Path) -> AsyncIterator[InferenceServer]:
    """Inference on port 0 serving the bench's digits model."""
    model = models.load("digits")
    repository = servers.model_repository(
        "digits", model.path, servers.batching_config(True), tmp_path / "repository"
    )
    server = InferenceServer(
        InferenceSettings(
            port=0, metrics_port=0, host="localhost", model_repository=str(repository)
        )
    )
    await server.start()
    yield server
    await server.shutdown(0)


@pytest.fixture
async def gateway(digits: InferenceServer) -> AsyncIterator[GatewayServer]:
    """A gateway without API keys in front of `digits`."""
    server = GatewayServer(
        GatewaySettings(
            port=0,
            metrics_port=0,
            http_port=0,
            host="localhost",
            no_auth=True,
            backends=f"localhost:{digits.grpc.port}",
        )
    )
    await server.start(ready_timeout=10)
    yield server
    await server.shutdown(0)


async def measure(
    address: str, payload: bytes | None = None, hops: dict[str, list[int]] | None = None
) -> tuple[Level | None, str]:
    # k6 runs as a subprocess; the servers share this event loop, so wait in a thread.
    run = partial(k6.measure, address, "digits", 4, seconds=1.5, warmup=0.5)
    return await asyncio.to_thread(partial(run, payload=payload, hops=hops))


def assert_clean(level: Level | None, why: str) -> None:
    assert level is not None, why
    assert why == "" and level.errors == 0 and not level.error_codes, why
    assert level.requests > 0 and level.throughput > 0 and level.concurrency == 4
    latency = level.latency_ms
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"], latency
    assert latency["mean"] > 0


async def test_k6_through_inference_completes_requests_without_errors(
    digits: InferenceServer,
) -> None:
    # The servers run in this process: its CPU is the hop's.
    level, why = await measure(f"localhost:{digits.grpc.port}", hops={"inference": [os.getpid()]})
    assert_clean(level, why)
    assert level is not None and level.loadgen_cpu and level.loadgen_cpu > 0
    assert level.cpu_us_per_request["inference"] > 0
    assert level.completed is not None and level.completed >= level.requests
    # The server saw at least what k6 counted (k6 also sent its warm-up).
    counts = await asyncio.to_thread(server_counts, f"localhost:{digits.grpc.port}", "digits")
    assert level is not None and counts is not None and counts[0] >= level.requests


async def test_k6_through_the_gateway_completes_requests_without_errors(
    gateway: GatewayServer,
) -> None:
    level, why = await measure(f"localhost:{gateway.grpc.port}")
    assert_clean(level, why)


async def test_k6_counts_the_errors_the_server_returns(digits: InferenceServer) -> None:
    model = models.load("digits")
    unknown = models.payloads(model, "no-such-model", count=1)[0]
    level, why = await measure(f"localhost:{digits.grpc.port}", payload=unknown)
    assert level is not None, why
    assert level.errors == level.requests > 0 and level.throughput == 0
    assert "NotFound" in why and "no-such-model" in why


async def test_k6_names_a_model_it_cannot_find(digits: InferenceServer) -> None:
    level, why = await asyncio.to_thread(
        k6.measure, f"localhost:{digits.grpc.port}", "no-such-model", 1
    )
    assert level is None and "NOT_FOUND" in why and "no-such-model" in why
