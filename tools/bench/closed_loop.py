"""A closed loop of gRPC ModelInfer callers on one channel, for the scripts that compare
two ways of serving side by side (tls_cost, mux_cost): N calls in flight, each caller
sending its next request as soon as the last is answered, for a fixed time."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Mapping

import grpc

from tools.bench.cpu import live_cpu_seconds

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
WARMUP_CALLS = 8


async def closed_loop(
    channel: grpc.aio.Channel,
    payloads: tuple[bytes, ...],
    concurrency: int,
    seconds: float,
    pids: Mapping[str, int] | None = None,
) -> dict[str, float]:
    """Requests per second and the median latency of `concurrency` callers, and the
    CPU µs per request of each server process in `pids` (`<hop>_cpu_us`)."""
    call = channel.unary_unary(MODEL_INFER)
    for payload in payloads[:WARMUP_CALLS]:
        await call(payload, timeout=30)
    hops = dict(pids or {})
    latencies: list[float] = []
    end = time.perf_counter() + seconds

    async def caller(index: int) -> None:
        i = index
        while time.perf_counter() < end:
            started = time.perf_counter()
            await call(payloads[i % len(payloads)], timeout=30)
            latencies.append(time.perf_counter() - started)
            i += 1

    before = {hop: live_cpu_seconds(pid) for hop, pid in hops.items()}
    began = time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - began
    count = len(latencies)
    figures = {"rps": count / elapsed, "p50_ms": statistics.median(latencies) * 1000}
    for hop, pid in hops.items():
        figures[f"{hop}_cpu_us"] = (live_cpu_seconds(pid) - before[hop]) / count * 1e6
    return figures
