"""Answering a bidirectional stream's requests concurrently, with backpressure."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from services.common.trim import TRIMMER

Request = TypeVar("Request")
Response = TypeVar("Response")

# Bytes of answers one stream may hold for a peer that does not read: 200 such
# streams then hold 200 MiB, not the 1.7 GB that 64 answers of ~110 KB each did.
STREAM_BUDGET_BYTES = 1 << 20


def size_of(answer: Any) -> int:
    """An answer's size in bytes: `len` for bytes, `ByteSize()` for a protobuf message."""
    if isinstance(answer, bytes | bytearray | memoryview):
        return len(answer)
    byte_size = getattr(answer, "ByteSize", None)
    return int(byte_size()) if callable(byte_size) else 0


class _Failed:
    """An answer that raised: the stream ends with its error."""

    def __init__(self, error: Exception) -> None:
        self.error = error


class _Budget:
    """Bytes of answers held, and the answers still running, each counted at the
    largest size seen so far, since an answer's size is known only once it is made,
    plus the bytes of the requests still running, which are held until answered.

    Until the first answer is made its size is unknown, so one request runs alone:
    else a peer that sends `window` requests at once and never reads would get
    `window` answers of any size made for it.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self.running = 0
        self.requests = 0
        self.largest: int | None = None
        self._changed = asyncio.Event()

    def _spent(self) -> int:
        if self.largest is None:
            return self.held + self.requests + (self.limit if self.running else 0)
        return self.held + self.requests + self.running * self.largest

    async def admit(self) -> None:
        """Wait until one more answer fits; with nothing outstanding, one always does."""
        while (self.held or self.running) and self._spent() >= self.limit:
            self._changed.clear()
            await self._changed.wait()
        self.running += 1

    def read(self, request_size: int) -> None:
        self.requests += request_size

    def made(self, size: int, request_size: int) -> None:
        self.running -= 1
        self.requests -= request_size
        self.held += size
        self.largest = max(self.largest or 0, size)
        self._changed.set()

    def abandoned(self, request_size: int = 0) -> None:
        self.running -= 1
        self.requests -= request_size
        self._changed.set()

    def taken(self, size: int) -> None:
        self.held -= size
        self._changed.set()


async def answer_each(
    requests: AsyncIterator[Request],
    answer: Callable[[Request], Awaitable[Response]],
    window: int,
    budget_bytes: int = STREAM_BUDGET_BYTES,
    size: Callable[[Response], int] = size_of,
    request_size: Callable[[Request], int] = size_of,
) -> AsyncGenerator[Response, None]:
    """Yield `answer(request)` for every request, in the order they finish.

    Requests run concurrently (so a stream's requests batch together), and at most
    `window` answers exist at a time, whether running, waiting to be taken or being
    written: a slot is freed only once the caller comes back for the next answer,
    that is once it has written the last one. Beyond the window, reading the stream
    pauses, so a peer that reads slowly holds `window` answers of server memory, not
    one per request it sent. Answers are bounded by bytes too: no new request is
    read while the answers held (running ones counted at the largest size seen) and
    the requests still running reach `budget_bytes`, so what a stream holds comes to
    at most about `budget_bytes` plus the largest request and answer. (Requests grpc
    core buffers before they are read are bounded by its receive window,
    `ServiceSettings.stream_window_bytes`.)
    `answer` must turn its own failures into responses; the stream ends when the
    requests do and every answer is out, and anything still running is cancelled
    if the caller goes away.
    """
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    if budget_bytes < 1:
        raise ValueError(f"budget_bytes must be at least 1, got {budget_bytes}")
    # Each queued answer holds a slot, so the queue never needs more room than this.
    responses: asyncio.Queue[tuple[Response, int] | _Failed | None] = asyncio.Queue(window + 1)
    slots = asyncio.Semaphore(window)
    budget = _Budget(budget_bytes)

    async def one(request: Request, rbytes: int) -> None:
        try:
            response = await answer(request)
        except asyncio.CancelledError:
            budget.abandoned(rbytes)
            slots.release()
            raise
        except Exception as exc:  # noqa: BLE001 - handed to the caller, which ends the stream
            budget.abandoned(rbytes)
            responses.put_nowait(_Failed(exc))
            return
        nbytes = size(response)
        budget.made(nbytes, rbytes)
        responses.put_nowait((response, nbytes))

    async def read() -> None:
        tasks: set[asyncio.Task[None]] = set()
        source = aiter(requests)
        try:
            while True:
                await slots.acquire()
                await budget.admit()
                try:
                    request = await anext(source)
                except StopAsyncIteration:
                    budget.abandoned()
                    slots.release()
                    break
                rbytes = request_size(request)
                budget.read(rbytes)
                task = asyncio.ensure_future(one(request, rbytes))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            responses.put_nowait(None)

    reader = asyncio.ensure_future(read())
    try:
        while (item := await responses.get()) is not None:
            if isinstance(item, _Failed):
                raise item.error
            response, nbytes = item
            try:
                yield response
            finally:
                budget.taken(nbytes)
                slots.release()  # the caller is back: the answer is written
        await reader
    finally:
        reader.cancel()
        TRIMMER.soon()
