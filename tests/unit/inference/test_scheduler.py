"""The scheduler: bounded queue, expired and cancelled work dropped, exact batching."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from services.common.errors import DeadlineExceeded, Internal, ResourceExhausted
from services.inference.config import DynamicBatching
from services.inference.scheduler import Job, Runner, Scheduler, Tensors
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


class Crash(BaseException):
    """Not an Exception: what a broken extension or runtime might raise."""


class CrashingRunner:
    """Raises `error` on its first `crashes` runs, then doubles its input."""

    def __init__(self, error: BaseException, crashes: int = 1) -> None:
        self.error = error
        self.crashes = crashes
        self.runs = 0

    def __call__(self, inputs: Tensors) -> Tensors:
        self.runs += 1
        if self.runs <= self.crashes:
            raise self.error
        return {"y": inputs["x"] * 2}


@pytest.mark.parametrize("error", [Crash("boom"), SystemExit(3), KeyboardInterrupt()])
async def test_a_crashed_instance_fails_its_requests_with_internal_and_is_replaced(
    error: BaseException, caplog: pytest.LogCaptureFixture
) -> None:
    runner = CrashingRunner(error)
    scheduler = Scheduler(
        [runner], batching=DynamicBatching(enabled=False), batchable=True, stats=ModelStats()
    )
    # No deadlines: before the fix the thread died and these waited forever.
    calls = [asyncio.ensure_future(scheduler.submit(x(1, float(i)), None)) for i in range(3)]
    results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 10)
    assert isinstance(results[0], Internal) and results[0].status == "INTERNAL"
    assert "restarted" in results[0].message and "boom" not in results[0].message
    for i, result in enumerate(results[1:], start=1):  # served by the replacement
        assert not isinstance(result, BaseException), result
        np.testing.assert_array_equal(result[0]["y"], x(1, 2.0 * i)["x"])
    again, _ = await asyncio.wait_for(scheduler.submit(x(2, 5.0), None), 10)
    np.testing.assert_array_equal(again["y"], x(2, 10.0)["x"])
    await asyncio.wait_for(scheduler.close(), 10)
    assert any("crashed" in r.getMessage() and r.exc_info for r in caplog.records)


async def test_every_request_of_a_crashed_batch_fails_and_the_queue_keeps_moving() -> None:
    runner = CrashingRunner(Crash("boom"), crashes=2)
    scheduler = make_with(runner, max_batch_size=4, max_queue_delay_us=50_000)
    calls = [asyncio.ensure_future(scheduler.submit(x(1, 1.0), None)) for i in range(12)]
    results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 10)
    failed = [r for r in results if isinstance(r, BaseException)]
    assert len(failed) == 8 and all(isinstance(r, Internal) for r in failed)  # 2 batches of 4
    assert runner.runs == 3
    await scheduler.close()


def make_with(runner: Runner, **batching: object) -> Scheduler:
    return Scheduler(
        [runner], batching=DynamicBatching(**batching), batchable=True, stats=ModelStats()
    )


async def test_batch_formation_looks_at_each_queued_request_a_bounded_number_of_times(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before the fix every batch scanned the whole queue (twice), which is quadratic
    in its length; the count of liveness checks shows how many requests a batch
    looked at, without timing anything."""
    looked = 0
    dead = Job.dead

    def counting(job: Job, now: float) -> bool:
        nonlocal looked
        looked += 1
        return dead(job, now)

    monkeypatch.setattr(Job, "dead", counting)
    runner = GatedRunner()
    queued = 2000
    scheduler = make(runner, max_batch_size=2, max_queue_size=queued + 1)
    blocker = asyncio.ensure_future(scheduler.submit(x(1), None))
    await asyncio.sleep(0.05)  # the blocker is running, held in the gate
    # Two shapes, interleaved: a batch takes two of its shape from anywhere in the queue.
    shapes = [x(1), {"x": np.ones((1, 5), np.float32)}]
    calls = [asyncio.ensure_future(scheduler.submit(shapes[i % 2], None)) for i in range(queued)]
    await asyncio.sleep(0.01)
    looked = 0
    runner.gate.set()
    await asyncio.gather(blocker, *calls)
    await scheduler.close()
    assert len(runner.batches) == 1 + queued // 2
    assert looked <= 4 * queued, f"{looked} liveness checks to batch {queued} requests"


async def test_cancelled_requests_free_their_queue_places_at_once() -> None:
    runner = GatedRunner()
    scheduler = make(runner, max_queue_size=2)
    running = asyncio.ensure_future(scheduler.submit(x(1), None))
    await asyncio.sleep(0.05)
    for _ in range(50):  # a client that gives up over and over while the model is busy
        gone = [asyncio.ensure_future(scheduler.submit(x(1), None)) for _ in range(2)]
        await asyncio.sleep(0)
        for call in gone:
            call.cancel()
        await asyncio.gather(*gone, return_exceptions=True)
        assert scheduler.depth == 0
    kept = [asyncio.ensure_future(scheduler.submit(x(1), None)) for _ in range(2)]
    await asyncio.sleep(0)
    assert scheduler.depth == 2  # before the fix: RESOURCE_EXHAUSTED, the queue was full of
    runner.gate.set()  # cancelled requests until the next batch
    await asyncio.gather(running, *kept)
    await scheduler.close()
    assert runner.batches == [1, 2]


async def test_a_batch_cut_at_a_preferred_size_leaves_the_rest_queued_in_order() -> None:
    runner = GatedRunner()
    scheduler = make(runner, max_batch_size=8, preferred_batch_sizes=(4,))
    blocker = asyncio.ensure_future(scheduler.submit(x(1, 0.0), None))
    await asyncio.sleep(0.05)
    calls = [asyncio.ensure_future(scheduler.submit(x(1, float(i)), None)) for i in range(6)]
    await asyncio.sleep(0.01)
    assert scheduler.depth == 6
    runner.gate.set()
    results = await asyncio.gather(blocker, *calls)
    await scheduler.close()
    assert runner.batches == [1, 4, 2] and scheduler.depth == 0
    for i, (outputs, _) in enumerate(results[1:]):
        np.testing.assert_array_equal(outputs["y"], x(1, 2.0 * i)["x"])
