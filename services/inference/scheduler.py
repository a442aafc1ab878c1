"""Per-model-version request queue, dynamic batcher and instance workers.

Requests wait in one bounded queue. Each instance has a worker that takes the
oldest live request and, when the model has a dynamic batch dimension, merges
queued requests of the same shape (grouping, not padding) up to max_batch_size,
runs ONNX Runtime on a worker thread, and splits the outputs back. Expired and
cancelled requests are dropped before they run.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from services.common.errors import DeadlineExceeded, ResourceExhausted, Unavailable
from services.inference.config import DynamicBatching
from services.inference.stats import ModelStats

Tensors = dict[str, np.ndarray]
Runner = Callable[[Tensors], Tensors]


@dataclass(eq=False)
class Job:
    """One queued request."""

    inputs: Tensors
    # Rows along the batch dimension, or None when the request must run alone.
    rows: int | None
    key: tuple[object, ...]
    deadline: float | None
    future: asyncio.Future[Tensors]
    enqueued_ns: int = field(default_factory=time.monotonic_ns)
    started_ns: int | None = None

    def dead(self, now: float) -> bool:
        """Cancelled by its caller, or past its deadline."""
        return self.future.done() or (self.deadline is not None and now >= self.deadline)


def batch_key(inputs: Tensors) -> tuple[int | None, tuple[object, ...]]:
    """Rows and the grouping key: requests merge only with equal non-batch shapes."""
    arrays = list(inputs.values())
    rows = {a.shape[0] if a.ndim else None for a in arrays}
    if len(rows) != 1 or None in rows:
        return None, ()
    key = tuple((name, a.shape[1:], a.dtype.str) for name, a in sorted(inputs.items()))
    return rows.pop(), key


class Scheduler:
    """Queue and workers of one loaded model version."""

    def __init__(
        self,
        runners: list[Runner],
        *,
        batching: DynamicBatching,
        batchable: bool,
        stats: ModelStats,
    ) -> None:
        self._runners = runners
        self._batching = batching
        self._merge = batching.enabled and batchable
        self._stats = stats
        self._queue: deque[Job] = deque()
        self._wakeup = asyncio.Event()
        self._closed = False
        self._executor = ThreadPoolExecutor(len(runners), thread_name_prefix="ort")
        self._workers = [asyncio.ensure_future(self._work(r)) for r in runners]

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
        rows, key = batch_key(inputs) if self._merge else (None, ())
        job = Job(inputs, rows, key, deadline, loop.create_future())
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
        self._executor.shutdown(wait=True)

    async def _work(self, runner: Runner) -> None:
        while True:
            jobs = await self._next_batch()
            if not jobs:
                return
            await self._execute(runner, jobs)

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
                break
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

    async def _execute(self, runner: Runner, jobs: list[Job]) -> None:
        started = time.monotonic_ns()
        for job in jobs:
            job.started_ns = started
        loop = asyncio.get_running_loop()
        try:
            inputs = jobs[0].inputs if len(jobs) == 1 else _merge(jobs)
            t_in = time.monotonic_ns()
            outputs = await loop.run_in_executor(self._executor, runner, inputs)
            t_run = time.monotonic_ns()
            results = [outputs] if len(jobs) == 1 else _split(outputs, jobs)
            t_out = time.monotonic_ns()
        except Exception as exc:  # noqa: BLE001 - every caller of the batch gets the error
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        rows = sum(job.rows or 1 for job in jobs) if jobs[0].rows is not None else 1
        self._stats.record_execution(rows, len(jobs), t_in - started, t_run - t_in, t_out - t_run)
        for job, result in zip(jobs, results, strict=True):
            if not job.future.done():
                job.future.set_result(result)


def _merge(jobs: list[Job]) -> Tensors:
    """Concatenate along the batch dimension: one copy into one new buffer per input."""
    return {
        name: np.concatenate([job.inputs[name] for job in jobs], axis=0) for name in jobs[0].inputs
    }


def _split(outputs: Tensors, jobs: list[Job]) -> list[Tensors]:
    results: list[Tensors] = []
    start = 0
    for job in jobs:
        assert job.rows is not None
        end = start + job.rows
        results.append({name: array[start:end] for name, array in outputs.items()})
        start = end
    return results
