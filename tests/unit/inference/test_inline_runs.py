"""Inline runs: a small model's runs take the event loop instead of a thread hop.

Which thread ran each batch is recorded by the runner itself, so the tests see where
the scheduler really ran it, not what it meant to do."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import numpy as np
import pytest

from services.inference.config import DynamicBatching
from services.inference.scheduler import Scheduler, Tensors
from services.inference.stats import ModelStats

# Generous bounds: the decision must not depend on how busy the machine is.
GENEROUS_NS = 500_000_000
TIGHT_NS = 1_000_000


class Recorder:
    """Doubles its input and records the thread and rows of every run; with a gate,
    the first run waits for it; with `seconds`, every run takes at least that long."""

    def __init__(self, gate: threading.Event | None = None, seconds: float = 0.0) -> None:
        self.gate = gate
        self.seconds = seconds
        self.runs: list[tuple[int, int]] = []  # (thread id, rows)
        self.started = threading.Event()

    def __call__(self, inputs: Tensors) -> Tensors:
        self.started.set()
        if self.gate is not None and not self.runs:
            self.gate.wait(10)
        if self.seconds:
            time.sleep(self.seconds)  # the model's own cost, not a synchronisation
        self.runs.append((threading.get_ident(), len(inputs["x"])))
        return {"y": inputs["x"] * 2}


def make(runner: Recorder, inline_ns: int) -> Scheduler:
    return Scheduler(
        [runner],
        batching=DynamicBatching(),
        batchable=True,
        stats=ModelStats(),
        inline_run_ns=inline_ns,
    )


def x(rows: int, value: float = 1.0) -> Tensors:
    return {"x": np.full((rows, 3), value, dtype=np.float32)}


async def test_after_a_first_run_on_the_thread_fast_runs_take_the_loop() -> None:
    runner = Recorder()
    scheduler = make(runner, GENEROUS_NS)
    for value in (1.0, 2.0, 3.0):
        outputs, queued_ns = await scheduler.submit(x(2, value), None)
        np.testing.assert_array_equal(outputs["y"], x(2, 2 * value)["x"])
    await scheduler.close()
    loop_thread = threading.get_ident()
    threads = [thread for thread, _ in runner.runs]
    # Nothing predicts the first run: it goes to the instance's thread.
    assert threads[0] != loop_thread
    assert threads[1:] == [loop_thread, loop_thread]
    assert queued_ns == 0


async def test_a_model_slower_than_the_bound_stays_on_its_thread() -> None:
    runner = Recorder(seconds=0.005)  # 5 ms a run, over the 1 ms bound
    scheduler = make(runner, TIGHT_NS)
    for _ in range(3):
        await scheduler.submit(x(1), None)
    await scheduler.close()
    loop_thread = threading.get_ident()
    assert len(runner.runs) == 3
    assert all(thread != loop_thread for thread, _ in runner.runs)


async def test_no_bound_means_every_run_on_the_thread() -> None:
    runner = Recorder()
    scheduler = make(runner, 0)
    for _ in range(3):
        await scheduler.submit(x(1), None)
    await scheduler.close()
    loop_thread = threading.get_ident()
    assert all(thread != loop_thread for thread, _ in runner.runs)


async def test_a_queue_that_formed_is_drained_as_one_batch_on_the_loop() -> None:
    gate = threading.Event()
    runner = Recorder(gate=gate)
    scheduler = make(runner, GENEROUS_NS)
    first = asyncio.ensure_future(scheduler.submit(x(1), None))
    await asyncio.to_thread(runner.started.wait, 10)  # the first run holds the thread
    # Still nothing to predict from: these two queue behind it.
    queued = [asyncio.ensure_future(scheduler.submit(x(1, v), None)) for v in (5.0, 7.0)]
    while scheduler.depth < 2:
        await asyncio.sleep(0)
    gate.set()
    await first
    results = await asyncio.gather(*queued)
    await scheduler.close()
    for (outputs, _), value in zip(results, (5.0, 7.0), strict=True):
        np.testing.assert_array_equal(outputs["y"], x(1, 2 * value)["x"])
    loop_thread = threading.get_ident()
    # The first run (gate included) was well under the bound, so the worker ran the
    # two queued requests merged, without its thread.
    assert runner.runs[1:] == [(loop_thread, 2)]


async def test_a_request_predicted_over_the_bound_goes_to_the_thread() -> None:
    runner = Recorder(seconds=0.002)  # about 2 ms a run
    # 100 ms: one row (about 2 ms) runs inline, 1000 rows (about 2 ms per row
    # predicted, 2 s) do not, since the estimate is per row.
    scheduler = make(runner, 100_000_000)
    await scheduler.submit(x(1), None)  # the thread: nothing to predict from
    await scheduler.submit(x(1), None)  # the loop
    await scheduler.submit(x(1000), None)  # predicted 1000 rows x ~2 ms: the thread
    await scheduler.close()
    loop_thread = threading.get_ident()
    on_loop = [(thread == loop_thread, rows) for thread, rows in runner.runs]
    assert on_loop == [(False, 1), (True, 1), (False, 1000)]


async def test_a_queue_delay_still_merges_requests() -> None:
    """max_queue_delay_us asks the batcher to wait for rows: requests do not run at
    once, but the merged batch still runs on the loop."""
    runner = Recorder()
    scheduler = Scheduler(
        [runner],
        batching=DynamicBatching(max_queue_delay_us=200_000, max_batch_size=2),
        batchable=True,
        stats=ModelStats(),
        inline_run_ns=GENEROUS_NS,
    )
    await scheduler.submit(x(1), None)
    await asyncio.gather(scheduler.submit(x(1), None), scheduler.submit(x(1), None))
    await scheduler.close()
    loop_thread = threading.get_ident()
    assert [rows for _, rows in runner.runs] == [1, 2]
    assert runner.runs[1][0] == loop_thread


class Burner(Recorder):
    """Fast, until `burn` is set: then each run spends that many seconds of CPU."""

    burn = 0.0

    def __call__(self, inputs: Tensors) -> Tensors:
        until = time.thread_time() + self.burn
        while time.thread_time() < until:
            pass
        return super().__call__(inputs)


async def test_an_inline_run_far_costlier_than_predicted_ends_inline_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runner = Burner()
    scheduler = make(runner, TIGHT_NS)  # 1 ms bound: 20 ms of CPU trips it
    await scheduler.submit(x(1), None)  # the thread
    await scheduler.submit(x(1), None)  # the loop
    runner.burn = 0.05
    with caplog.at_level(logging.WARNING):
        await scheduler.submit(x(1), None)  # the loop, 50 ms of its CPU
    runner.burn = 0.0
    for _ in range(3):
        await scheduler.submit(x(1), None)  # fast again, yet on the thread
    await scheduler.close()
    loop_thread = threading.get_ident()
    on_loop = [thread == loop_thread for thread, _ in runner.runs]
    assert on_loop == [False, True, True] + [False] * 3
    assert "no longer run inline" in caplog.text
