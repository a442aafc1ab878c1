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


async def test_buffers_are_an_lru_under_a_byte_cap() -> None:
    # Each width's buffer is 8 rows x width floats; the cap holds 3 of width 16.
    cap = 3 * 8 * 16 * 4
    buffers = BatchBuffers(8, double, cap)
    for width in range(1, 400):  # variable sequence lengths: a new row shape each time
        merged = buffers.merge([job(1, 1.0, width), job(2, 2.0, width)])
        np.testing.assert_array_equal(merged["x"][2], np.full(width, 2.0, np.float32))
        assert buffers.nbytes <= cap, f"{buffers.nbytes} bytes kept after width {width}"
    assert len(buffers) <= 3

    allocated: list[int] = []

    class Recording:
        def __call__(self, inputs: Tensors) -> Tensors:
            return double(inputs)

        def allocate(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
            allocated.append(shape[1])
            return np.empty(shape, dtype)

    def use(width: int) -> None:
        small.merge([job(1, 1.0, width), job(1, 1.0, width)])

    small = BatchBuffers(8, Recording(), 8 * 4 * (16 + 8 + 12))  # room for these three
    for width in (16, 8, 12, 16):
        use(width)
    assert allocated == [16, 8, 12]  # the second 16 reused its buffer
    use(4)  # no room: 8, the least recently used, goes
    use(16)
    use(12)
    assert allocated == [16, 8, 12, 4]
    use(8)
    assert allocated == [16, 8, 12, 4, 8]


async def test_a_buffer_larger_than_the_cap_is_never_kept() -> None:
    buffers = BatchBuffers(8, double, 8 * 3 * 4 - 1)
    merged = buffers.merge([job(2, 1.0), job(3, 2.0)])
    np.testing.assert_array_equal(merged["x"][4], [2.0] * 3)
    assert len(buffers) == 0 and buffers.nbytes == 0
    off = BatchBuffers(8, double, 0)  # 0: no reuse at all
    off.merge([job(1, 1.0), job(1, 1.0)])
    assert len(off) == 0


async def test_retired_buffers_leave_the_byte_count() -> None:
    buffers = BatchBuffers(8, double)
    merged = buffers.merge([job(1, 1.0), job(1, 2.0)])
    assert buffers.nbytes == 8 * 3 * 4
    buffers.release(merged, {"y": merged["x"]})
    assert buffers.nbytes == 0


async def test_the_model_config_caps_the_scheduler_buffers() -> None:
    gate = threading.Event()

    def runner(inputs: Tensors) -> Tensors:
        gate.wait(10)
        return double(inputs)

    cap = 4 * 8 * 4 * 2  # two buffers of 4 rows x 8 floats
    batching = DynamicBatching(max_batch_size=4, max_buffer_bytes=cap)
    scheduler = Scheduler([runner], batching=batching, batchable=True, stats=ModelStats())
    first = asyncio.ensure_future(scheduler.submit({"x": np.ones((1, 3), np.float32)}, None))
    await asyncio.sleep(0.02)  # running, held in the gate: the rest queue and merge
    calls = [
        asyncio.ensure_future(scheduler.submit({"x": np.full((1, w), w, np.float32)}, None))
        for w in range(1, 9)
        for _ in range(2)
    ]
    await asyncio.sleep(0.02)
    gate.set()
    await first
    for (outputs, _), w in zip(
        await asyncio.gather(*calls), np.repeat(range(1, 9), 2), strict=True
    ):
        np.testing.assert_array_equal(outputs["y"], np.full((1, w), 2 * w, np.float32))
    assert 0 < scheduler.buffer_bytes <= cap
    await scheduler.close()
