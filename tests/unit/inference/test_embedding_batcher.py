"""The text batcher: texts of many requests merged, bounded queue in texts, expired
and cancelled requests dropped before they run, a failed run failing its batch only."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import numpy as np
import pytest

from services.common.errors import (
    DeadlineExceeded,
    Internal,
    InvalidArgument,
    ResourceExhausted,
    ServiceError,
    Unavailable,
)
from services.inference.tasks.text_batcher import TextBatcher, TextJob

WAIT_S = 10.0


class GatedRunner:
    """Each text's length as its row; blocks each run until released; records batches."""

    def __init__(self, gated: bool = False) -> None:
        self.gate = threading.Event()
        if not gated:
            self.gate.set()
        self.started = threading.Event()
        self.batches: list[list[str]] = []
        self.fail_next = False
        self.threads: set[str] = set()

    def __call__(self, jobs: Sequence[TextJob]) -> list[np.ndarray | ServiceError]:
        self.threads.add(threading.current_thread().name)
        self.started.set()
        assert self.gate.wait(WAIT_S)
        self.batches.append([t for job in jobs for t in job.texts])
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("the session broke")
        out: list[np.ndarray | ServiceError] = []
        for job in jobs:
            if not job.truncate:
                out.append(InvalidArgument("text 0 is too long"))
            else:
                out.append(np.array([[len(t)] for t in job.texts], np.float32))
        return out


def make(
    runner: GatedRunner,
    max_batch_size: int = 8,
    max_queue_delay_us: int = 0,
    max_queue_size: int = 16,
) -> TextBatcher:
    batcher = TextBatcher(
        runner,
        max_batch_size=max_batch_size,
        max_queue_delay_us=max_queue_delay_us,
        max_queue_size=max_queue_size,
    )
    batcher.start()
    return batcher


async def until(condition: object, what: str) -> None:
    """Poll `condition()` on the loop until it holds, failing after WAIT_S."""
    loop = asyncio.get_running_loop()
    limit = loop.time() + WAIT_S
    while not condition():  # type: ignore[operator]
        assert loop.time() < limit, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


async def busy(batcher: TextBatcher, runner: GatedRunner) -> asyncio.Future[tuple[np.ndarray, int]]:
    """A request that holds the worker in the gated runner until the gate opens."""
    first = asyncio.ensure_future(batcher.submit(["first"], True, None))
    assert await asyncio.to_thread(runner.started.wait, WAIT_S)
    return first


async def test_requests_merge_up_to_max_batch_size_texts_in_order() -> None:
    runner = GatedRunner(gated=True)
    batcher = make(runner, max_batch_size=4)
    first = await busy(batcher, runner)
    sizes = [2, 1, 1, 3, 1]
    calls = [
        asyncio.ensure_future(batcher.submit([f"r{i}-{j}" * (j + 1) for j in range(n)], True, None))
        for i, n in enumerate(sizes)
    ]
    await until(lambda: batcher.depth == len(sizes), "the requests to queue")
    runner.gate.set()
    await first
    results = await asyncio.gather(*calls)
    # 2+1+1 fill the first batch of 4; 3+1 the next: merged in arrival order.
    assert [len(b) for b in runner.batches] == [1, 4, 4]
    assert runner.batches[1] == ["r0-0", "r0-1r0-1", "r1-0", "r2-0"]
    for n, (rows, queue_ns) in zip(sizes, results, strict=True):
        assert rows.shape == (n, 1)
        assert queue_ns >= 0
    assert results[3][0][:, 0].tolist() == [4.0, 8.0, 12.0]
    assert (batcher.runs, batcher.texts_run) == (3, 9)
    await batcher.close()


async def test_a_request_larger_than_the_batch_runs_alone() -> None:
    runner = GatedRunner()
    batcher = make(runner, max_batch_size=2)
    rows, _ = await batcher.submit(["a", "bb", "ccc"], True, None)
    assert rows[:, 0].tolist() == [1.0, 2.0, 3.0]
    # Runs happen on the batcher's own thread, never on the event loop's.
    assert runner.threads and all(n.startswith("text-batcher") for n in runner.threads)
    assert threading.current_thread().name not in runner.threads
    await batcher.close()


async def test_the_queue_is_bounded_in_texts() -> None:
    runner = GatedRunner(gated=True)
    batcher = make(runner, max_queue_size=4)
    first = await busy(batcher, runner)
    waiting = asyncio.ensure_future(batcher.submit(["a", "b", "c"], True, None))
    await until(lambda: batcher.depth == 1, "the request to queue")
    with pytest.raises(ResourceExhausted, match="3 texts waiting, max_queue_size is 4"):
        await batcher.submit(["d", "e"], True, None)
    with pytest.raises(InvalidArgument, match="5 texts in one request, expected at most 4"):
        await batcher.submit(list("abcde"), True, None)
    fits = asyncio.ensure_future(batcher.submit(["d"], True, None))  # 3 + 1 texts: room
    await until(lambda: batcher.depth == 2, "the request that fits to queue")
    runner.gate.set()
    await first
    assert (await waiting)[0].shape == (3, 1)
    assert (await fits)[0].shape == (1, 1)
    await batcher.close()


async def test_expired_and_cancelled_requests_never_run() -> None:
    runner = GatedRunner(gated=True)
    batcher = make(runner)
    loop = asyncio.get_running_loop()
    first = await busy(batcher, runner)
    deadline = loop.time() + 0.05
    expiring = asyncio.ensure_future(batcher.submit(["expiring"], True, deadline))
    cancelled = asyncio.ensure_future(batcher.submit(["cancelled"], True, None))
    kept = asyncio.ensure_future(batcher.submit(["kept"], True, None))
    await until(lambda: batcher.depth == 3, "the requests to queue")
    cancelled.cancel()
    await until(lambda: batcher.depth == 2, "the cancelled request to leave the queue")
    await until(lambda: loop.time() > deadline, "the deadline to pass")
    runner.gate.set()
    await first
    with pytest.raises(DeadlineExceeded, match="while the request was queued"):
        await expiring
    assert (await kept)[0][:, 0].tolist() == [4.0]
    assert runner.batches == [["first"], ["kept"]]
    await batcher.close()


async def test_a_passed_deadline_is_refused_before_queueing() -> None:
    batcher = make(GatedRunner())
    loop = asyncio.get_running_loop()
    with pytest.raises(DeadlineExceeded, match="before the request was queued"):
        await batcher.submit(["late"], True, loop.time() - 1)
    assert batcher.runs == 0
    await batcher.close()


async def test_an_error_for_one_request_leaves_the_others_of_its_batch() -> None:
    runner = GatedRunner(gated=True)
    batcher = make(runner)
    first = await busy(batcher, runner)
    strict = asyncio.ensure_future(batcher.submit(["long"], False, None))
    other = asyncio.ensure_future(batcher.submit(["ok"], True, None))
    await until(lambda: batcher.depth == 2, "the requests to queue")
    runner.gate.set()
    await first
    with pytest.raises(InvalidArgument, match="too long"):
        await strict
    assert (await other)[0].shape == (1, 1)
    assert runner.batches[1] == ["long", "ok"]
    await batcher.close()


async def test_a_failed_run_fails_its_batch_with_a_fixed_message_and_serving_goes_on() -> None:
    runner = GatedRunner()
    batcher = make(runner)
    runner.fail_next = True
    with pytest.raises(Internal) as caught:
        await batcher.submit(["boom"], True, None)
    assert "session" not in caught.value.message
    assert (await batcher.submit(["after"], True, None))[0].shape == (1, 1)
    await batcher.close()


async def test_close_finishes_queued_requests_and_refuses_new_ones() -> None:
    runner = GatedRunner(gated=True)
    batcher = make(runner)
    first = await busy(batcher, runner)
    queued = asyncio.ensure_future(batcher.submit(["queued"], True, None))
    await until(lambda: batcher.depth == 1, "the request to queue")
    closing = asyncio.ensure_future(batcher.close())
    await until(lambda: batcher._closed, "close to begin")
    with pytest.raises(Unavailable, match="unloading"):
        await batcher.submit(["new"], True, None)
    runner.gate.set()
    await asyncio.gather(first, closing)
    assert (await queued)[0].shape == (1, 1)
