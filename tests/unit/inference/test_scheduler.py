"""The scheduler: bounded queue, expired and cancelled work dropped, exact batching."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from services.common.errors import DeadlineExceeded, ResourceExhausted
from services.inference.config import DynamicBatching
from services.inference.scheduler import Scheduler, Tensors
from services.inference.stats import ModelStats


class GatedRunner:
    """Doubles its input; blocks each run until released; records every batch."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.batches: list[int] = []

    def __call__(self, inputs: Tensors) -> Tensors:
        self.gate.wait(10)
        self.batches.append(len(inputs["x"]))
        return {"y": inputs["x"] * 2}


def make(runner: GatedRunner, **batching: object) -> Scheduler:
    return Scheduler(
        [runner], batching=DynamicBatching(**batching), batchable=True, stats=ModelStats()
    )


def x(rows: int, value: float = 1.0) -> Tensors:
    return {"x": np.full((rows, 3), value, dtype=np.float32)}


async def test_expired_and_cancelled_requests_never_run() -> None:
    runner = GatedRunner()
    scheduler = make(runner)
    loop = asyncio.get_running_loop()
    first = asyncio.ensure_future(scheduler.submit(x(1), None))
    await asyncio.sleep(0.05)  # first is running (blocked in the gate)
    expiring = asyncio.ensure_future(scheduler.submit(x(1), loop.time() + 0.05))
    cancelled = asyncio.ensure_future(scheduler.submit(x(1), None))
    await asyncio.sleep(0.1)
    cancelled.cancel()
    await asyncio.sleep(0.05)
    runner.gate.set()
    await first
    with pytest.raises(DeadlineExceeded):
        await expiring
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    await scheduler.close()
    assert runner.batches == [1]  # only the first request ever ran


async def test_full_queue_is_resource_exhausted_at_once() -> None:
    runner = GatedRunner()
    scheduler = make(runner, max_queue_size=2)
    running = asyncio.ensure_future(scheduler.submit(x(1), None))
    await asyncio.sleep(0.05)
    queued = [asyncio.ensure_future(scheduler.submit(x(1), None)) for _ in range(2)]
    await asyncio.sleep(0.01)
    with pytest.raises(ResourceExhausted, match="max_queue_size is 2"):
        await scheduler.submit(x(1), None)
    runner.gate.set()
    await asyncio.gather(running, *queued)
    await scheduler.close()


async def test_queued_requests_merge_and_each_gets_its_own_rows() -> None:
    runner = GatedRunner()
    scheduler = make(runner, max_batch_size=8)
    blocker = asyncio.ensure_future(scheduler.submit(x(1, 0.0), None))
    await asyncio.sleep(0.05)
    sizes = [1, 2, 3, 1]
    jobs = [
        asyncio.ensure_future(scheduler.submit(x(n, float(i + 1)), None))
        for i, n in enumerate(sizes)
    ]
    await asyncio.sleep(0.01)
    runner.gate.set()
    await blocker
    results = await asyncio.gather(*jobs)
    await scheduler.close()
    assert runner.batches == [1, 7]
    for i, ((outputs, _), n) in enumerate(zip(results, sizes, strict=True)):
        np.testing.assert_array_equal(outputs["y"], np.full((n, 3), 2.0 * (i + 1), np.float32))


async def test_different_shapes_are_grouped_not_merged() -> None:
    runner = GatedRunner()
    scheduler = make(runner, max_batch_size=8)
    blocker = asyncio.ensure_future(scheduler.submit(x(1), None))
    await asyncio.sleep(0.05)
    a = asyncio.ensure_future(scheduler.submit(x(2), None))
    b = asyncio.ensure_future(scheduler.submit({"x": np.ones((2, 5), np.float32)}, None))
    c = asyncio.ensure_future(scheduler.submit(x(2), None))
    await asyncio.sleep(0.01)
    runner.gate.set()
    await asyncio.gather(blocker, a, b, c)
    await scheduler.close()
    assert runner.batches == [1, 4, 2]


async def test_unbatchable_models_run_alone() -> None:
    runner = GatedRunner()
    scheduler = Scheduler([runner], batching=DynamicBatching(), batchable=False, stats=ModelStats())
    runner.gate.set()
    await asyncio.gather(*(scheduler.submit(x(2), None) for _ in range(5)))
    await scheduler.close()
    assert runner.batches == [2] * 5
