"""An instance's thread and its reusable batch buffers.

Copies: a merged batch is assembled with one copy into a buffer the instance keeps
for that shape and dtype (no allocation, no page faults per batch), on the
instance's thread so the event loop never waits for it. An instance runs one batch
at a time, so its buffers are free again once ONNX Runtime returns; a buffer that an
output might alias is retired instead of reused. The buffers are an LRU with a byte
cap, so variable row shapes (sequence lengths) cannot grow memory without bound.
"""

from __future__ import annotations

import asyncio
import math
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from opentelemetry.trace import SpanContext

Tensors = dict[str, np.ndarray]
Runner = Callable[[Tensors], Tensors]
Allocate = Callable[[tuple[int, ...], np.dtype], np.ndarray]
Result = tuple[list[Tensors], tuple[int, int, int]]
# What an instance keeps for reuse when the model config does not say.
DEFAULT_BUFFER_BYTES = 128 << 20


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
    # In the scheduler's queue; cleared when it is taken or dropped, so the queue
    # can leave it where it is and skip it later (removal in the middle is O(n)).
    queued: bool = True

    def dead(self, now: float) -> bool:
        """Cancelled by its caller, or past its deadline."""
        return self.future.done() or (self.deadline is not None and now >= self.deadline)


class InstanceCrashed(Exception):  # noqa: N818 - it is an event, named as one
    """Something other than an Exception escaped the runner, and ended its thread."""


class InstanceThread:
    """The thread of one instance: takes one batch at a time from a queue, runs it,
    and hands the result back to the event loop with a single call_soon_threadsafe.

    Leaner than run_in_executor (no concurrent.futures.Future and chaining), which
    matters for small models, where the hand-over costs as much as the model."""

    def __init__(
        self, runner: Runner, max_rows: int, index: int, max_bytes: int = DEFAULT_BUFFER_BYTES
    ) -> None:
        self.runner = runner
        self.buffers = BatchBuffers(max_rows, runner, max_bytes)
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
                result = run_batch(self.runner, self.buffers, jobs)
            except Exception as exc:  # noqa: BLE001 - delivered to the batch's callers
                loop.call_soon_threadsafe(_fail, future, exc)
            except BaseException as exc:  # noqa: BLE001 - the scheduler replaces this thread
                # Raised as is on the event loop, SystemExit or KeyboardInterrupt would
                # stop the whole server; as an Exception it fails this instance only.
                crashed = InstanceCrashed(f"the runner raised {type(exc).__name__}")
                crashed.__cause__ = exc
                loop.call_soon_threadsafe(_fail, future, crashed)
                return
            else:
                loop.call_soon_threadsafe(_succeed, future, result)
                # Not kept while the next batch runs: a runner reuses an output buffer
                # only once nothing else refers to it (binding.OutputBuffers).
                del result


def _succeed(future: asyncio.Future[Result], result: Result) -> None:
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future[Result], exc: Exception) -> None:
    if not future.done():
        future.set_exception(exc)


def run_batch(runner: Runner, buffers: BatchBuffers, jobs: list[Job]) -> Result:
    """Merge, run and split, on the instance's thread or inline; returns the results
    and the three durations (input, infer, output) in nanoseconds."""
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
    The least recently used buffers are dropped once they hold more than
    `max_bytes`; a buffer larger than that on its own is never kept.
    """

    def __init__(self, max_rows: int, runner: Runner, max_bytes: int = DEFAULT_BUFFER_BYTES):
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self._allocate: Allocate = getattr(runner, "allocate", _allocate)
        self._free: OrderedDict[tuple[object, ...], np.ndarray] = OrderedDict()
        self._bytes = 0

    def merge(self, jobs: list[Job]) -> Tensors:
        """Concatenate the jobs' inputs along the batch dimension: one copy per input."""
        rows = sum(job.rows or 0 for job in jobs)
        merged: Tensors = {}
        for name, first in jobs[0].inputs.items():
            parts = [job.inputs[name] for job in jobs]
            buffer = None
            if first.dtype.kind != "O" and rows <= self.max_rows:
                buffer = self._buffer((name, first.shape[1:], first.dtype.str), first)
            if buffer is None:
                merged[name] = np.concatenate(parts, axis=0)
            else:
                merged[name] = np.concatenate(parts, axis=0, out=buffer[:rows])
        return merged

    def _buffer(self, key: tuple[object, ...], first: np.ndarray) -> np.ndarray | None:
        buffer = self._free.get(key)
        if buffer is not None:
            self._free.move_to_end(key)
            return buffer
        size = self.max_rows * math.prod(first.shape[1:]) * first.dtype.itemsize
        if size > self.max_bytes:
            return None
        while self._free and self._bytes + size > self.max_bytes:
            _, old = self._free.popitem(last=False)
            self._bytes -= old.nbytes
        buffer = self._free[key] = self._allocate((self.max_rows, *first.shape[1:]), first.dtype)
        self._bytes += buffer.nbytes
        return buffer

    def release(self, inputs: Tensors, outputs: Tensors) -> None:
        """Retire any buffer an output may share memory with (an Identity-like graph)."""
        for name, array in inputs.items():
            if any(np.may_share_memory(array, out) for out in outputs.values()):
                key = (name, array.shape[1:], array.dtype.str)
                retired = self._free.pop(key, None)
                if retired is not None:
                    self._bytes -= retired.nbytes

    @property
    def nbytes(self) -> int:
        """Bytes held in buffers kept for reuse."""
        return self._bytes

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
