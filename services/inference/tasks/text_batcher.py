"""A bounded queue of text requests, merged into batches of texts on one worker thread.

The tensor scheduler merges requests of equal shapes only; texts have any length, so
here requests merge whatever their lengths and the runner pads each batch to its
longest text. The queue is bounded in texts, not requests, because a text is what
costs memory and time. Requests leave the queue in order; one that was cancelled
or whose deadline passed is dropped before it runs. The runner is blocking and runs
on the batcher's own thread, so the event loop never waits for a tokenizer or a
session.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from services.common.errors import (
    DeadlineExceeded,
    Internal,
    InvalidArgument,
    ResourceExhausted,
    ServiceError,
    Unavailable,
)
from services.inference.stats import ModelStats

_log = logging.getLogger(__name__)
FAILED = "the model failed to run this batch"
# What the runner makes of one job (the embedding task's vectors and token counts).
R = TypeVar("R")


@dataclass(eq=False)
class TextJob(Generic[R]):
    """One queued request: its texts and whether they may be cut to the model's length."""

    texts: list[str]
    truncate: bool
    deadline: float | None
    future: asyncio.Future[R]
    # The caller's API key id ("" when none), for usage counted per key.
    key_id: str = ""
    enqueued_ns: int = field(default_factory=time.monotonic_ns)
    started_ns: int | None = None
    # Cleared when taken or dropped; the deque skips it later (removal in the middle is O(n)).
    queued: bool = True

    def dead(self, now: float) -> bool:
        """Cancelled by its caller, or past its deadline."""
        return self.future.done() or (self.deadline is not None and now >= self.deadline)


# Blocking: one outcome per job, in order (its result, or the error that job alone gets).
BatchRunner = Callable[[Sequence[TextJob[R]]], list[R | ServiceError]]


class TextBatcher(Generic[R]):
    """Queue and worker of one loaded text model version."""

    def __init__(
        self,
        run: BatchRunner[R],
        *,
        max_batch_size: int,
        max_queue_delay_us: int,
        max_queue_size: int,
        name: str = "text-batcher",
        stats: ModelStats | None = None,
    ) -> None:
        self._run = run
        self._stats = stats
        self._max_batch = max_batch_size
        self._delay_s = max_queue_delay_us / 1e6
        self._max_queue = max_queue_size
        self._name = name
        self._order: deque[TextJob[R]] = deque()
        self._texts = 0  # texts in queued jobs
        self._jobs = 0  # queued jobs
        self._closed = False
        self._wakeup = asyncio.Event()
        self._executor: ThreadPoolExecutor | None = None
        self._worker: asyncio.Task[None] | None = None
        # Runs and the texts they held, since the start (the batch size is their ratio).
        self.runs = 0
        self.texts_run = 0

    @property
    def depth(self) -> int:
        """Requests waiting to run."""
        return self._jobs

    def start(self) -> None:
        """Start the worker; on the event loop."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self._name)
        self._worker = asyncio.ensure_future(self._work())

    async def submit(
        self, texts: list[str], truncate: bool, deadline: float | None, key_id: str = ""
    ) -> tuple[R, int]:
        """Run one request's texts; returns the runner's result and the nanoseconds they
        queued."""
        if self._closed or self._worker is None:
            raise Unavailable("model version is unloading")
        if len(texts) > self._max_queue:
            raise InvalidArgument(
                f"{len(texts)} texts in one request, expected at most {self._max_queue} "
                "(the model's max_queue_size)"
            )
        if self._texts + len(texts) > self._max_queue:
            raise ResourceExhausted(
                f"queue is full: {self._texts} texts waiting, max_queue_size is "
                f"{self._max_queue}, this request has {len(texts)}"
            )
        loop = asyncio.get_running_loop()
        if deadline is not None and loop.time() >= deadline:
            raise DeadlineExceeded("deadline passed before the request was queued")
        job: TextJob[R] = TextJob(texts, truncate, deadline, loop.create_future(), key_id)
        if len(self._order) > 2 * self._max_queue:
            self._order = deque(j for j in self._order if j.queued)
        self._order.append(job)
        self._texts += len(texts)
        self._jobs += 1
        self._wakeup.set()
        try:
            result = await job.future
        except asyncio.CancelledError:
            self._unqueue(job)  # a cancelled caller leaves the queue at once
            raise
        assert job.started_ns is not None
        return result, job.started_ns - job.enqueued_ns

    async def close(self) -> None:
        """Refuse new requests, finish the queued ones, stop the worker and its thread."""
        self._closed = True
        self._wakeup.set()
        if self._worker is not None:
            await asyncio.gather(self._worker, return_exceptions=True)
        if self._executor is not None:
            await asyncio.to_thread(self._executor.shutdown, wait=True)

    def _unqueue(self, job: TextJob[R]) -> None:
        if job.queued:
            job.queued = False
            self._texts -= len(job.texts)
            self._jobs -= 1

    def _pop_live(self) -> TextJob[R] | None:
        """The oldest live job, taken out of the queue; expired ones met are failed."""
        now = asyncio.get_running_loop().time()
        while self._order:
            job = self._order.popleft()
            if not job.queued:
                continue
            self._unqueue(job)
            if job.dead(now):
                _expire(job)
                continue
            return job
        return None

    async def _next_batch(self) -> list[TextJob[R]]:
        """Jobs to run together: the oldest, then those behind it while their texts fit,
        after waiting up to max_queue_delay_us for the batch to fill."""
        loop = asyncio.get_running_loop()
        while True:
            if self._jobs == 0:
                if self._closed:
                    return []
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            until = loop.time() + self._delay_s
            while self._texts < self._max_batch and not self._closed:
                remaining = until - loop.time()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except TimeoutError:
                    break
            head = self._pop_live()
            if head is None:
                continue
            return [head, *self._take_fitting(len(head.texts))]

    def _take_fitting(self, texts: int) -> list[TextJob[R]]:
        """The queued jobs behind a head of `texts` texts, in order, while they fit;
        stops at the first that does not, so requests run in the order they came."""
        now = asyncio.get_running_loop().time()
        taken = []
        while texts < self._max_batch and self._order:
            job = self._order[0]
            if not job.queued:
                self._order.popleft()
                continue
            if job.dead(now):
                self._order.popleft()
                self._unqueue(job)
                _expire(job)
                continue
            if texts + len(job.texts) > self._max_batch:
                break
            self._order.popleft()
            self._unqueue(job)
            taken.append(job)
            texts += len(job.texts)
        return taken

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            if not batch:
                return
            started = time.monotonic_ns()
            for job in batch:
                job.started_ns = started
            self.runs += 1
            self.texts_run += sum(len(job.texts) for job in batch)
            try:
                outcomes = await loop.run_in_executor(self._executor, self._run, batch)
            except asyncio.CancelledError:
                _fail(batch, lambda: Unavailable("model version is unloading"))
                raise
            except Exception:
                _log.exception("text batch of %d requests failed", len(batch))
                _fail(batch, lambda: Internal(FAILED))
                continue
            if self._stats is not None:
                # Tokenizing and running are one step here: all of it is compute_infer.
                texts = sum(len(job.texts) for job in batch)
                elapsed = time.monotonic_ns() - started
                self._stats.record_execution(texts, len(batch), 0, elapsed, 0)
            for job, outcome in zip(batch, outcomes, strict=True):
                if job.future.done():
                    continue
                if isinstance(outcome, ServiceError):
                    job.future.set_exception(outcome)
                else:
                    job.future.set_result(outcome)


def _expire(job: TextJob[R]) -> None:
    if not job.future.done():
        job.future.set_exception(DeadlineExceeded("deadline passed while the request was queued"))


def _fail(jobs: Sequence[TextJob[R]], error: Callable[[], ServiceError]) -> None:
    for job in jobs:
        if not job.future.done():
            job.future.set_exception(error())
