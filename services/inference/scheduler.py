"""Per-model-version request queue, dynamic batcher and instance workers.

Requests wait in one bounded queue. Each instance has a worker that takes the
oldest live request and, when the model has a dynamic batch dimension, merges
queued requests of the same shape (grouping, not padding) up to max_batch_size,
runs ONNX Runtime on the instance's thread, and splits the outputs back. Expired
and cancelled requests are dropped before they run.

Small models on the CPU run on the event loop where services.inference.inline predicts
it pays: a request that finds the queue empty runs at once (unless a queue delay asks
for rows), and a worker runs the batch it formed without its thread.

Batch formation is linear: the queue is a FIFO of every request plus one FIFO per
shape, with a running count of each shape's rows, so forming a batch looks only at
the requests it takes (and at dropped ones, once). A worker that crashes fails the
requests it holds with INTERNAL and is replaced, so nothing waits on a dead worker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

from opentelemetry import trace

from services.common.errors import DeadlineExceeded, Internal, ResourceExhausted, Unavailable
from services.common.telemetry import Tracing
from services.inference.config import DynamicBatching
from services.inference.inline import InlinePolicy
from services.inference.instances import (
    BatchBuffers,
    InstanceCrashed,
    InstanceThread,
    Job,
    Runner,
    Tensors,
    run_batch,
)
from services.inference.stats import ModelStats

__all__ = ["BatchBuffers", "Job", "Runner", "Scheduler", "Tensors", "batch_key"]

_log = logging.getLogger(__name__)
CRASHED = "the model instance running this request failed; it has been restarted"
# Wait before restarting a worker that crashed holding no request: a fault in the
# scheduler itself would otherwise restart it in a busy loop.
_IDLE_CRASH_BACKOFF_S = 1.0


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


def _expired(job: Job) -> None:
    if not job.future.done():
        job.future.set_exception(DeadlineExceeded("deadline passed while the request was queued"))


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
        inline_run_ns: int = 0,
    ) -> None:
        self._runners = runners
        self._inline = InlinePolicy(inline_run_ns)
        self._tracing = tracing or Tracing()
        self._batching = batching
        self._batchable = batchable
        self._merge = batching.enabled and batchable
        # A request that finds the queue empty runs at once only when nothing asks
        # the batcher to wait for more rows.
        self._inline_submit = not (self._merge and batching.max_queue_delay_us)
        self._stats = stats
        # Every queued job in arrival order, and the mergeable ones per key too; a job
        # taken through one of them stays in the other until it reaches the front.
        self._order: deque[Job] = deque()
        self._groups: dict[tuple[object, ...], deque[Job]] = {}
        self._rows: dict[tuple[object, ...], int] = {}  # queued rows per key
        self._waiting = 0  # queued jobs
        self._wakeup = asyncio.Event()
        self._closed = False
        self._threads: list[InstanceThread | None] = [None] * len(runners)
        self._workers = [asyncio.ensure_future(self._supervise(i)) for i in range(len(runners))]

    @property
    def depth(self) -> int:
        """Requests waiting in the queue."""
        return self._waiting

    @property
    def buffer_bytes(self) -> int:
        """Bytes the instances keep in batch buffers for reuse."""
        return sum(t.buffers.nbytes for t in self._threads if t is not None)

    async def submit(self, inputs: Tensors, deadline: float | None) -> tuple[Tensors, int]:
        """Run one request; returns its outputs and the nanoseconds it queued."""
        if self._closed:
            raise Unavailable("model version is unloading")
        if self._waiting >= self._batching.max_queue_size:
            raise ResourceExhausted(
                f"queue is full: {self._waiting} requests waiting, "
                f"max_queue_size is {self._batching.max_queue_size}"
            )
        loop = asyncio.get_running_loop()
        if deadline is not None and loop.time() >= deadline:
            raise DeadlineExceeded("deadline passed before the request was queued")
        rows, key = batch_key(inputs) if self._batchable else (None, ())
        count = rows or 1
        if not self._merge:
            rows, key = None, ()
        if self._inline_submit and not self._waiting and self._inline.allows(count):
            return self._run_inline(inputs, count), 0
        job = Job(
            inputs, rows, key, deadline, loop.create_future(), count, span=self._tracing.current()
        )
        if len(self._order) > 2 * self._batching.max_queue_size:
            self._compact()
        self._order.append(job)
        if rows is not None:
            self._groups.setdefault(key, deque()).append(job)
            self._rows[key] = self._rows.get(key, 0) + rows
        self._waiting += 1
        self._wakeup.set()
        try:
            outputs = await job.future
        except asyncio.CancelledError:
            self._unqueue(job)  # a cancelled caller cancels the future: it is dropped
            raise
        assert job.started_ns is not None
        return outputs, job.started_ns - job.enqueued_ns

    def _run_inline(self, inputs: Tensors, rows: int) -> Tensors:
        tracing = self._tracing
        attributes = {"maas.batch_size": rows, "maas.batch_requests": 1}
        with tracing.span("inference.batch", attributes):  # under the request's own span
            begin, started = time.time_ns(), time.monotonic_ns()
            outputs = self._inline.run(lambda: self._runners[0](inputs))
            infer = time.monotonic_ns() - started
            tracing.record("inference.ort_run", begin, begin + infer, attributes=attributes)
        self._inline.observe(rows, infer)
        self._stats.record_execution(rows, 1, 0, infer, 0)
        return outputs

    async def close(self) -> None:
        """Refuse new requests, finish queued and running ones, stop the workers."""
        self._closed = True
        self._wakeup.set()
        await asyncio.gather(*self._workers, return_exceptions=True)
        threads = [t for t in self._threads if t is not None]
        for thread in threads:
            thread.stop()
        for thread in threads:
            await asyncio.to_thread(thread.join)

    def _compact(self) -> None:
        """Forget the jobs left behind in the deques once they are most of them, so
        requests cancelled while the workers are busy cannot pile up (amortised O(1))."""
        self._order = deque(job for job in self._order if job.queued)
        for key, group in list(self._groups.items()):
            live = deque(job for job in group if job.queued)
            if live:
                self._groups[key] = live
            else:
                del self._groups[key]

    def _unqueue(self, job: Job) -> None:
        """Take a job out of the counts; the deques drop it when it reaches their front."""
        if not job.queued:
            return
        job.queued = False
        self._waiting -= 1
        if job.rows is not None:
            left = self._rows[job.key] - job.rows
            if left:
                self._rows[job.key] = left
            else:
                del self._rows[job.key]

    async def _supervise(self, index: int) -> None:
        """Run instance `index`'s worker, and a new one (on a new thread) when it crashes."""
        runner = self._runners[index]
        while True:
            thread = InstanceThread(
                runner, self._batching.max_batch_size, index, self._batching.max_buffer_bytes
            )
            self._threads[index] = thread
            held: list[Job] = []  # taken from the queue and not answered yet
            try:
                await self._work(thread, held)
                return
            except Exception:
                _log.exception(
                    "instance %d crashed; failing the %d requests it held and restarting it",
                    index,
                    sum(not job.future.done() for job in held),
                )
                self._fail(held, lambda: Internal(CRASHED))
            except BaseException:  # cancelled with the event loop, or interrupted
                self._fail(held, lambda: Unavailable("model version is unloading"))
                raise
            finally:
                thread.stop()
            if not held:
                await asyncio.sleep(_IDLE_CRASH_BACKOFF_S)

    @staticmethod
    def _fail(jobs: list[Job], error: Callable[[], Exception]) -> None:
        for job in jobs:
            if not job.future.done():
                job.future.set_exception(error())

    async def _work(self, thread: InstanceThread, held: list[Job]) -> None:
        while True:
            held.clear()
            jobs = await self._next_batch(held)
            if not jobs:
                return
            await self._execute(thread, jobs)

    def _pop_head(self) -> Job | None:
        """The oldest live job, taken out of the queue; dead ones met on the way are
        failed (expired) or forgotten (cancelled)."""
        now = asyncio.get_running_loop().time()
        order = self._order
        while order:
            job = order.popleft()
            if not job.queued:
                continue
            self._unqueue(job)
            if job.rows is not None:
                self._trim(job.key)  # the oldest of its group: at the front, or behind dropped ones
            if job.dead(now):
                _expired(job)
                continue
            return job
        return None

    def _trim(self, key: tuple[object, ...]) -> None:
        """Drop taken and dropped jobs from the front of a group; forget empty groups."""
        group = self._groups.get(key)
        if group is None:
            return
        while group and not group[0].queued:
            group.popleft()
        if not group:
            del self._groups[key]

    async def _next_batch(self, held: list[Job]) -> list[Job]:
        loop = asyncio.get_running_loop()
        while True:
            head = self._pop_head()
            if head is None:
                if self._closed:
                    return []
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            held.append(head)
            if head.rows is None:
                return [head]
            if self._batching.max_queue_delay_us:
                await self._wait_for_rows(head)
                if head.dead(loop.time()):
                    _expired(head)
                    held.clear()
                    continue
            taken = self._take_matching(head)
            held.extend(taken)
            return [head, *taken]

    async def _wait_for_rows(self, head: Job) -> None:
        assert head.rows is not None
        loop = asyncio.get_running_loop()
        until = loop.time() + self._batching.max_queue_delay_us / 1e6
        while head.rows + self._rows.get(head.key, 0) < self._batching.max_batch_size:
            remaining = until - loop.time()
            if remaining <= 0 or self._closed:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return

    def _take_matching(self, head: Job) -> list[Job]:
        """Queued jobs of the head's shape, in order, while they fit in the batch.

        Stops at the first that does not fit, so a batch looks at no job it neither
        takes nor drops (requests of one shape also run in the order they came)."""
        assert head.rows is not None
        group = self._groups.get(head.key)
        if not group:
            return []
        limit = self._batching.max_batch_size
        now = asyncio.get_running_loop().time()
        taken: list[Job] = []
        rows = head.rows
        while group and rows < limit:
            job = group[0]
            if not job.queued:
                group.popleft()
                continue
            assert job.rows is not None
            if job.dead(now):
                group.popleft()
                self._unqueue(job)
                _expired(job)
                continue
            if rows + job.rows > limit:
                break
            group.popleft()
            self._unqueue(job)
            taken.append(job)
            rows += job.rows
        kept = self._preferred_prefix(head.rows, taken)
        for job in reversed(taken[len(kept) :]):  # back to the front, in their order
            job.queued = True
            self._waiting += 1
            self._rows[head.key] = self._rows.get(head.key, 0) + (job.rows or 0)
            group.appendleft(job)
        if not group:
            del self._groups[head.key]
        return kept

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
                if self._inline.allows(rows):  # drains the queue without the threads
                    batch = (thread.runner, thread.buffers, jobs)
                    results, timings = self._inline.run(lambda: run_batch(*batch))
                else:
                    results, timings = await thread.run(jobs)
            except InstanceCrashed:
                raise  # the supervisor fails the batch and replaces the instance
            except Exception as exc:  # noqa: BLE001 - every caller of the batch gets the error
                error = exc
                self._fail(jobs, lambda: error)
                return
            if tracing.enabled:
                merged, infer, _ = timings
                begin = run_started + merged
                tracing.record(
                    "inference.ort_run", begin, begin + infer, attributes={"maas.batch_size": rows}
                )
        self._stats.record_execution(rows, len(jobs), *timings)
        self._inline.observe(rows, timings[1])
        for job, result in zip(jobs, results, strict=True):
            if not job.future.done():
                job.future.set_result(result)
