"""The load generator: several processes, each one grpc.aio channel with many calls in
flight, sending prebuilt serialized ModelInferRequests (raw tensor contents) and
never parsing a response beyond the first. Each process measures its own CPU time,
so a run shows whether the generator, rather than the server, was the limit.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol, TypeVar, cast

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 256 << 20),
    ("grpc.max_send_message_length", 256 << 20),
    # One connection per process, however many calls are in flight on it.
    ("grpc.use_local_subchannel_pool", 1),
]


@dataclass(frozen=True)
class LoadSpec:
    """What one level sends: to where, what, how many at once, for how long."""

    address: str
    payloads: tuple[bytes, ...]  # serialized ModelInferRequests, sent in turn
    concurrency: int
    seconds: float
    warmup: float = 1.0
    processes: int = 2
    timeout: float = 30.0


@dataclass
class LoadResult:
    """Latencies of the successful calls inside the window, and what it cost."""

    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    window: float = 0.0
    cpu_seconds: float = 0.0  # all generator processes together, inside the window
    completed: int = 0  # every successful call, warm-up and first call included

    @property
    def cpu_cores(self) -> float:
        """Average cores the generator used during the window."""
        return self.cpu_seconds / self.window if self.window else 0.0


def split(concurrency: int, processes: int) -> list[int]:
    """Calls in flight per process: as even as possible, no process with none."""
    n = max(1, min(processes, concurrency))
    return [concurrency // n + (1 if i < concurrency % n else 0) for i in range(n)]


class _Spec(Protocol):
    @property
    def concurrency(self) -> int: ...

    @property
    def processes(self) -> int: ...


S = TypeVar("S", bound=_Spec)


def run_load(spec: S, main: Callable[[S, int, int, float], LoadResult] | None = None) -> LoadResult:
    """Drive one level from `spec.processes` processes and merge what they measured;
    `main(spec, calls, offset, start)` is one process's load (gRPC unless given)."""
    drive = main or cast("Callable[[S, int, int, float], LoadResult]", _process_main)
    shares = split(spec.concurrency, spec.processes)
    # Every process starts measuring at the same moment, after its warm-up.
    start = time.time() + 1.0 + 0.2 * len(shares)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(len(shares), mp_context=context) as pool:
        futures = [
            pool.submit(drive, spec, share, offset, start) for offset, share in enumerate(shares)
        ]
        parts = [f.result() for f in futures]
    result = LoadResult(window=parts[0].window)
    for part in parts:
        result.latencies += part.latencies
        result.cpu_seconds += part.cpu_seconds
        result.completed += part.completed
        for code, count in part.errors.items():
            result.errors[code] = result.errors.get(code, 0) + count
    return result


def _process_main(spec: LoadSpec, share: int, offset: int, start: float) -> LoadResult:
    return asyncio.run(_drive(spec, share, offset, start))


async def _drive(spec: LoadSpec, share: int, offset: int, start: float) -> LoadResult:
    import grpc

    result = LoadResult(window=spec.seconds)
    async with grpc.aio.insecure_channel(spec.address, options=CHANNEL_OPTIONS) as channel:
        call = channel.unary_unary(MODEL_INFER)  # bytes in, bytes out: no (de)serializing
        first = await call(spec.payloads[0], timeout=spec.timeout)
        _check_response(first)
        result.completed = 1
        payloads = spec.payloads

        async def send(i: int) -> str:
            try:
                await call(payloads[i % len(payloads)], timeout=spec.timeout)
            except grpc.aio.AioRpcError as exc:
                return str(exc.code().name)
            return ""

        await measure(result, spec.warmup, share, offset, start, send)
    return result


async def measure(
    result: LoadResult,
    warmup: float,
    share: int,
    offset: int,
    start: float,
    send: Callable[[int], Awaitable[str]],
) -> None:
    """`share` workers call `send(i)` back to back, from `start` (wall clock) plus
    `warmup` until `result.window` seconds later, and `result` gets what completed
    inside the window, its latencies, the error codes `send` gave ("" for success)
    and this process's CPU time. Worker k of process `offset` starts at request
    offset * 7919 + k, so that the processes do not send the same payloads in step."""
    await asyncio.sleep(max(0.0, start - time.time()))
    begin = time.perf_counter() + warmup
    end = begin + result.window
    cpu: list[float] = []

    async def marks() -> None:
        await asyncio.sleep(max(0.0, begin - time.perf_counter()))
        cpu.append(time.process_time())
        await asyncio.sleep(max(0.0, end - time.perf_counter()))
        cpu.append(time.process_time())

    async def worker(index: int) -> None:
        i = index
        latencies = result.latencies
        while (now := time.perf_counter()) < end:
            code = await send(i)
            i += 1
            if code:
                if begin <= time.perf_counter() <= end:
                    result.errors[code] = result.errors.get(code, 0) + 1
                continue
            result.completed += 1
            # Calls that complete inside the window count, whenever they began.
            if begin <= (done := time.perf_counter()) <= end:
                latencies.append(done - now)

    await asyncio.gather(marks(), *(worker(offset * 7919 + k) for k in range(share)))
    result.cpu_seconds = cpu[1] - cpu[0] if len(cpu) == 2 else 0.0


def _check_response(data: bytes) -> None:
    """Fail early, with the reason, if the target answers something unexpected."""
    from maas_proto.inference import grpc_predict_v2_pb2 as pb

    response = pb.ModelInferResponse.FromString(data)
    if not response.outputs:
        raise RuntimeError(f"the target answered without outputs: {response}")


def process_cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process (Linux /proc), for the server's share of the cores."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def children_cpu_seconds(pids: Sequence[int]) -> float | None:
    """Summed CPU seconds of several processes; None if any is unreadable."""
    total = 0.0
    for pid in pids:
        seconds = process_cpu_seconds(pid)
        if seconds is None:
            return None
        total += seconds
    return total
