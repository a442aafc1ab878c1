"""Per-model-version request queue, dynamic batcher and instance workers.

Requests wait in one bounded queue. Each instance has a worker that takes the
oldest live request and, when the model has a dynamic batch dimension, merges
queued requests of the same shape (grouping, not padding) up to max_batch_size,
runs ONNX Runtime on a worker thread, and splits the outputs back. Expired and
cancelled requests are dropped before they run.

Copies: a merged batch is assembled with one copy into a buffer the instance
keeps for that shape and dtype (no allocation, no page faults per batch), on the
worker thread so the event loop never waits for it. An instance runs one batch
at a time, so its buffers are free again once ONNX Runtime returns; a buffer that
an output might alias is retired instead of reused.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from opentelemetry import trace
from opentelemetry.trace import SpanContext

from services.common.errors import DeadlineExceeded, ResourceExhausted, Unavailable
from services.common.telemetry import Tracing
from services.inference.config import DynamicBatching
from services.inference.stats import ModelStats

Tensors = dict[str, np.ndarray]
Runner = Callable[[Tensors], Tensors]
Allocate = Callable[[tuple[int, ...], np.dtype], np.ndarray]


@dataclass(eq=False)
class Job:
    """One queued request."""

    inputs: Tensors
    # Rows along the batch dimension, or None when the request must run alone.
    rows: int | None
    key: tuple[object, ...]
    deadline: float | None
    future: asyncio.Future[Tensors]
    # Rows counted in the statistics (inference_count), batched or not.
    count: int = 1
    enqueued_ns: int = field(default_factory=time.monotonic_ns)
    started_ns: int | None = None
    # The request's span (when tracing): the queue span's parent, and a batch's link.
    span: SpanContext | None = None

    def dead(self, now: float) -> bool:
        """Cancelled by its caller, or past its deadline."""
        return self.future.done() or (self.deadline is not None and now >= self.deadline)


def batch_key(inputs: Tensors) -> tuple[int | None, tuple[object, ...]]:
    """Rows and the grouping key: requests merge only with equal non-batch shapes.

    Inputs arrive in the model's signature order (validate.check_inputs), so the key
    needs no sorting; it is built once per request, on the hot path."""
    rows: int | None = None
    key = []
    for name, array in inputs.items():
        shape = array.shape
        if not shape or (rows is not None and shape[0] != rows):
            return None, ()
        rows = shape[0]
        key.append((name, shape[1:], array.dtype))
    return rows, tuple(key)


class Scheduler:
    """Queue and workers of one loaded model version."""

    def __init__(
        self,
        runners: list[Runner],
        *,
        batching: DynamicBatching,
        batchable: bool,
        stats: ModelStats,
        tracing: Tracing | None = None,
    ) -> None:
        self._runners = runners
        self._tracing = tracing or Tracing()
        self._batching = batching
        self._batchable = batchable
        self._merge = batching.enabled and batchable
        self._stats = stats
        self._queue: deque[Job] = deque()
        self._wakeup = asyncio.Event()
        self._closed = False
        self._threads = [
            InstanceThread(r, batching.max_batch_size, i) for i, r in enumerate(runners)
        ]
        self._workers = [asyncio.ensure_future(self._work(t)) for t in self._threads]

    @property
    def depth(self) -> int:
        """Requests waiting in the queue."""
        return len(self._queue)

    async def submit(self, inputs: Tensors, deadline: float | None) -> tuple[Tensors, int]:
        """Run one request; returns its outputs and the nanoseconds it queued."""
        if self._closed:
            raise Unavailable("model version is unloading")
        if len(self._queue) >= self._batching.max_queue_size:
            raise ResourceExhausted(
                f"queue is full: {len(self._queue)} requests waiting, "
                f"max_queue_size is {self._batching.max_queue_size}"
            )
        loop = asyncio.get_running_loop()
        if deadline is not None and loop.time() >= deadline:
            raise DeadlineExceeded("deadline passed before the request was queued")
        rows, key = batch_key(inputs) if self._batchable else (None, ())
        count = rows or 1
        if not self._merge:
            rows, key = None, ()
        job = Job(
            inputs, rows, key, deadline, loop.create_future(), count, span=self._tracing.current()
        )
        self._queue.append(job)
        self._wakeup.set()
        outputs = await job.future  # a cancelled caller cancels the future: it is dropped
        assert job.started_ns is not None
        return outputs, job.started_ns - job.enqueued_ns

    async def close(self) -> None:
        """Refuse new requests, finish queued and running ones, stop the workers."""
        self._closed = True
        self._wakeup.set()
        await asyncio.gather(*self._workers, return_exceptions=True)
        for thread in self._threads:
            thread.stop()
        for thread in self._threads:
            await asyncio.to_thread(thread.join)

    async def _work(self, thread: InstanceThread) -> None:
        while True:
            jobs = await self._next_batch()
            if not jobs:
                return
            await self._execute(thread, jobs)

    def _drop_dead(self) -> None:
        now = asyncio.get_running_loop().time()
        if not any(job.dead(now) for job in self._queue):
            return
        live: deque[Job] = deque()
        for job in self._queue:
            if not job.dead(now):
                live.append(job)
            elif not job.future.done():
                job.future.set_exception(
                    DeadlineExceeded("deadline passed while the request was queued")
                )
        self._queue = live

    async def _next_batch(self) -> list[Job]:
        while True:
            self._drop_dead()
            if self._queue:
                break
            if self._closed:
                return []
            self._wakeup.clear()
            await self._wakeup.wait()
        head = self._queue.popleft()
        if head.rows is None:
            return [head]
        if self._batching.max_queue_delay_us:
            await self._wait_for_rows(head)
            if head.dead(asyncio.get_running_loop().time()):
                if not head.future.done():
                    head.future.set_exception(
                        DeadlineExceeded("deadline passed while the request was queued")
                    )
                return await self._next_batch()
        return [head, *self._take_matching(head)]

    async def _wait_for_rows(self, head: Job) -> None:
        assert head.rows is not None
        loop = asyncio.get_running_loop()
        until = loop.time() + self._batching.max_queue_delay_us / 1e6
        while head.rows + self._matching_rows(head) < self._batching.max_batch_size:
            remaining = until - loop.time()
            if remaining <= 0 or self._closed:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return

    def _matching_rows(self, head: Job) -> int:
        return sum(j.rows or 0 for j in self._queue if j.key == head.key and j.rows is not None)

    def _take_matching(self, head: Job) -> list[Job]:
        assert head.rows is not None
        limit = self._batching.max_batch_size
        now = asyncio.get_running_loop().time()
        taken: list[Job] = []
        rows = head.rows
        for job in self._queue:
            if job.key != head.key or job.rows is None or job.dead(now):
                continue
            if rows + job.rows > limit:
                continue  # a smaller request further back may still fit
            taken.append(job)
            rows += job.rows
        taken = self._preferred_prefix(head.rows, taken)
        if taken:
            chosen = set(map(id, taken))
            self._queue = deque(j for j in self._queue if id(j) not in chosen)
        return taken

    def _preferred_prefix(self, head_rows: int, taken: list[Job]) -> list[Job]:
        """Cut the batch at the largest preferred size it can reach exactly, if any."""
        preferred = set(self._batching.preferred_batch_sizes)
        if not preferred:
            return taken
        rows, best = head_rows, -1 if head_rows not in preferred else 0
        for i, job in enumerate(taken, start=1):
            rows += job.rows or 0
            if rows in preferred:
                best = i
        return taken if best < 0 else taken[:best]

    async def _execute(self, thread: InstanceThread, jobs: list[Job]) -> None:
        started = time.monotonic_ns()
        for job in jobs:
            job.started_ns = started
        rows = sum(job.count for job in jobs)
        tracing = self._tracing
        if tracing.enabled:
            wall = time.time_ns()
            for job in jobs:
                tracing.record(
                    "inference.queue", wall - (started - job.enqueued_ns), wall, job.span
                )
        links = [trace.Link(job.span) for job in jobs if job.span is not None]
        attributes = {"maas.batch_size": rows, "maas.batch_requests": len(jobs)}
        parent = tracing.under(jobs[0].span)
        with tracing.span("inference.batch", attributes, links=links, context=parent):
            run_started = time.time_ns()
            try:
                results, timings = await thread.run(jobs)
            except Exception as exc:  # noqa: BLE001 - every caller of the batch gets the error
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(exc)
                return
            if tracing.enabled:
                merged, infer, _ = timings
                begin = run_started + merged
                tracing.record(
                    "inference.ort_run", begin, begin + infer, attributes={"maas.batch_size": rows}
                )
        self._stats.record_execution(rows, len(jobs), *timings)
        for job, result in zip(jobs, results, strict=True):
            if not job.future.done():
                job.future.set_result(result)


class InstanceThread:
    """The thread of one instance: takes one batch at a time from a queue, runs it,
    and hands the result back to the event loop with a single call_soon_threadsafe.

    Leaner than run_in_executor (no concurrent.futures.Future and chaining), which
    matters for small models, where the hand-over costs as much as the model."""

    def __init__(self, runner: Runner, max_rows: int, index: int) -> None:
        self.runner = runner
        self.buffers = BatchBuffers(max_rows, runner)
        self._inbox: queue.SimpleQueue[tuple[list[Job], asyncio.Future[Result]] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._main, name=f"ort-{index}", daemon=True)
        self._thread.start()

    def run(self, jobs: list[Job]) -> asyncio.Future[Result]:
        """Queue a batch; the future completes on the event loop with its result."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._inbox.put((jobs, future))
        return future

    def stop(self) -> None:
        """Let the thread finish once the batches before this call are done."""
        self._inbox.put(None)

    def join(self) -> None:
        """Wait for the thread to end (blocking)."""
        self._thread.join()

    def _main(self) -> None:
        while (item := self._inbox.get()) is not None:
            jobs, future = item
            loop = future.get_loop()
            try:
                result = _run_batch(self.runner, self.buffers, jobs)
            except Exception as exc:  # noqa: BLE001 - delivered to the batch's callers
                loop.call_soon_threadsafe(_fail, future, exc)
            else:
                loop.call_soon_threadsafe(_succeed, future, result)


Result = tuple[list[Tensors], tuple[int, int, int]]


def _succeed(future: asyncio.Future[Result], result: Result) -> None:
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future[Result], exc: Exception) -> None:
    if not future.done():
        future.set_exception(exc)


def _run_batch(
    runner: Runner, buffers: BatchBuffers, jobs: list[Job]
) -> tuple[list[Tensors], tuple[int, int, int]]:
    """Merge, run and split on a worker thread; returns the results and the three
    durations (input, infer, output) in nanoseconds."""
    t0 = time.monotonic_ns()
    inputs = jobs[0].inputs if len(jobs) == 1 else buffers.merge(jobs)
    t1 = time.monotonic_ns()
    outputs = runner(inputs)
    t2 = time.monotonic_ns()
    if len(jobs) == 1:
        results = [outputs]
    else:
        buffers.release(inputs, outputs)
        results = _split(outputs, jobs)
    return results, (t1 - t0, t2 - t1, time.monotonic_ns() - t2)


class BatchBuffers:
    """One instance's reusable input buffers, one per (input, row shape, dtype).

    Each holds max_batch_size rows; a batch uses a leading slice, which is
    contiguous, so ONNX Runtime reads it without another copy. The runner may
    offer its own allocator (`runner.allocate`, e.g. pinned host memory for CUDA).
    """

    def __init__(self, max_rows: int, runner: Runner) -> None:
        self.max_rows = max_rows
        self._allocate: Allocate = getattr(runner, "allocate", _allocate)
        self._free: dict[tuple[object, ...], np.ndarray] = {}

    def merge(self, jobs: list[Job]) -> Tensors:
        """Concatenate the jobs' inputs along the batch dimension: one copy per input."""
        rows = sum(job.rows or 0 for job in jobs)
        merged: Tensors = {}
        for name, first in jobs[0].inputs.items():
            parts = [job.inputs[name] for job in jobs]
            if first.dtype.kind == "O" or rows > self.max_rows:
                merged[name] = np.concatenate(parts, axis=0)
                continue
            key = (name, first.shape[1:], first.dtype.str)
            buffer = self._free.get(key)
            if buffer is None:
                buffer = self._free[key] = self._allocate(
                    (self.max_rows, *first.shape[1:]), first.dtype
                )
            merged[name] = np.concatenate(parts, axis=0, out=buffer[:rows])
        return merged

    def release(self, inputs: Tensors, outputs: Tensors) -> None:
        """Retire any buffer an output may share memory with (an Identity-like graph)."""
        for name, array in inputs.items():
            if any(np.may_share_memory(array, out) for out in outputs.values()):
                key = (name, array.shape[1:], array.dtype.str)
                self._free.pop(key, None)

    def __len__(self) -> int:
        return len(self._free)


def _allocate(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    return np.empty(shape, dtype=dtype)


def _split(outputs: Tensors, jobs: list[Job]) -> list[Tensors]:
    results: list[Tensors] = []
    start = 0
    for job in jobs:
        assert job.rows is not None
        end = start + job.rows
        results.append({name: array[start:end] for name, array in outputs.items()})
        start = end
    return results
