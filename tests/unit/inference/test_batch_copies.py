"""Batch assembly: one copy into a reused per-instance buffer, off the event loop."""

from __future__ import annotations

import asyncio
import threading

import numpy as np

from services.inference.config import DynamicBatching
from services.inference.scheduler import BatchBuffers, Job, Scheduler, Tensors
from services.inference.stats import ModelStats


def job(rows: int, value: float, width: int = 3) -> Job:
    inputs = {"x": np.full((rows, width), value, np.float32)}
    future: asyncio.Future[Tensors] = asyncio.get_running_loop().create_future()
    return Job(inputs, rows, (), None, future, rows)


def double(inputs: Tensors) -> Tensors:
    return {"y": inputs["x"] * 2}


async def test_merge_reuses_one_buffer_per_shape_and_dtype() -> None:
    buffers = BatchBuffers(8, double)
    first = buffers.merge([job(2, 1.0), job(3, 2.0)])
    second = buffers.merge([job(1, 3.0), job(1, 4.0)])
    assert first["x"].__array_interface__["data"][0] == second["x"].__array_interface__["data"][0]
    np.testing.assert_array_equal(second["x"], [[3.0] * 3, [4.0] * 3])
    assert second["x"].flags.c_contiguous and len(buffers) == 1
    buffers.merge([job(1, 1.0, width=5), job(1, 1.0, width=5)])
    assert len(buffers) == 2  # another row shape, another buffer


async def test_buffer_an_output_aliases_is_retired() -> None:
    buffers = BatchBuffers(8, double)
    merged = buffers.merge([job(1, 1.0), job(1, 2.0)])
    buffers.release(merged, {"y": merged["x"][:1]})  # an Identity-like graph
    assert len(buffers) == 0
    again = buffers.merge([job(1, 5.0), job(1, 6.0)])
    assert not np.may_share_memory(again["x"], merged["x"])
    np.testing.assert_array_equal(merged["x"], [[1.0] * 3, [2.0] * 3])  # left alone


async def test_oversized_and_string_batches_get_fresh_arrays() -> None:
    buffers = BatchBuffers(4, double)
    buffers.merge([job(3, 1.0), job(3, 2.0)])
    loop = asyncio.get_running_loop()
    strings = [
        Job({"s": np.array([["a"]], dtype=object)}, 1, (), None, loop.create_future(), 1)
        for _ in range(2)
    ]
    merged = buffers.merge(strings)
    assert merged["s"].tolist() == [["a"], ["a"]] and len(buffers) == 0


async def test_the_runner_allocator_is_used() -> None:
    class Pinned:
        def __init__(self) -> None:
            self.shapes: list[tuple[int, ...]] = []

        def __call__(self, inputs: Tensors) -> Tensors:
            return double(inputs)

        def allocate(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
            self.shapes.append(shape)
            return np.empty(shape, dtype)

    runner = Pinned()
    BatchBuffers(16, runner).merge([job(1, 1.0), job(2, 1.0)])
    assert runner.shapes == [(16, 3)]


async def test_merge_and_run_happen_off_the_event_loop() -> None:
    gate = threading.Event()
    seen: list[tuple[str, int]] = []

    def runner(inputs: Tensors) -> Tensors:
        gate.wait(10)
        seen.append((threading.current_thread().name, len(inputs["x"])))
        return double(inputs)

    scheduler = Scheduler([runner], batching=DynamicBatching(), batchable=True, stats=ModelStats())
    x = {"x": np.ones((1, 3), np.float32)}
    first = asyncio.ensure_future(scheduler.submit(x, None))
    await asyncio.sleep(0.02)
    rest = [asyncio.ensure_future(scheduler.submit(x, None)) for _ in range(3)]
    await asyncio.sleep(0.02)
    gate.set()
    await asyncio.gather(first, *rest)
    await scheduler.close()
    assert [rows for _, rows in seen] == [1, 3]
    assert all(name.startswith("ort") for name, _ in seen)


async def test_a_head_that_expires_during_the_queue_delay_never_runs() -> None:
    ran: list[int] = []

    def runner(inputs: Tensors) -> Tensors:
        ran.append(len(inputs["x"]))
        return double(inputs)

    scheduler = Scheduler(
        [runner],
        batching=DynamicBatching(max_queue_delay_us=100_000, max_batch_size=8),
        batchable=True,
        stats=ModelStats(),
    )
    loop = asyncio.get_running_loop()
    x = {"x": np.ones((1, 3), np.float32)}
    expiring = asyncio.ensure_future(scheduler.submit(x, loop.time() + 0.02))
    await asyncio.sleep(0.005)
    kept = asyncio.ensure_future(scheduler.submit(x, None))
    results = await asyncio.gather(expiring, kept, return_exceptions=True)
    await scheduler.close()
    assert type(results[0]).__name__ == "DeadlineExceeded"
    assert ran == [1]


async def test_statistics_count_rows_even_when_batching_is_off() -> None:
    stats = ModelStats()
    scheduler = Scheduler(
        [double], batching=DynamicBatching(enabled=False), batchable=True, stats=stats
    )
    await scheduler.submit({"x": np.ones((5, 3), np.float32)}, None)
    await scheduler.close()
    assert stats.inference_count == 5 and stats.execution_count == 1
