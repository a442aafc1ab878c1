"""Answering a bidirectional stream's requests concurrently, with backpressure."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, TypeVar

from services.common.trim import TRIMMER

Request = TypeVar("Request")
Response = TypeVar("Response")

# ModelStreamInfer response parameters: Triton's flag on a request's last response,
# and, beside an error_message, the failure's gRPC status name (a stream response has
# no status of its own), so the gateway retries and counts it as a failed unary call
# and the HTTP front end answers with its status.
FINAL_PARAM = "triton_final_response"
ERROR_STATUS_PARAM = "maas_error_status"
# Bytes of answers one stream may hold for a peer that does not read: 200 such
# streams then hold 200 MiB, not the 1.7 GB that 64 answers of ~110 KB each did.
STREAM_BUDGET_BYTES = 1 << 20


def size_of(answer: Any) -> int:
    """An answer's size in bytes: `len` for bytes, `ByteSize()` for a protobuf message."""
    if isinstance(answer, bytes | bytearray | memoryview):
        return len(answer)
    byte_size = getattr(answer, "ByteSize", None)
    return int(byte_size()) if callable(byte_size) else 0


@dataclass(frozen=True)
class _Item(Generic[Response]):
    """A response made and its size; `written` is set once it is written (None: the
    request's only answer, whose slot the reader frees itself)."""

    response: Response
    size: int
    written: asyncio.Future[None] | None


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

    def produced(self, size: int) -> None:
        """A response of a request that goes on running (answer_streams)."""
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
    async for response in _answers(
        requests, answer, None, window, budget_bytes, size, request_size
    ):
        yield response


async def answer_streams(
    requests: AsyncIterator[Request],
    answer: Callable[[Request], AsyncIterator[Response]],
    window: int,
    budget_bytes: int = STREAM_BUDGET_BYTES,
    size: Callable[[Response], int] = size_of,
    request_size: Callable[[Request], int] = size_of,
) -> AsyncGenerator[Response, None]:
    """answer_each for requests that each get any number of responses (a decoupled model).

    Every response of `answer(request)` is yielded, each request's in its order and
    the requests' interleaved as they are made. A request holds its slot of the window
    until its last response is written, and its next response is asked for only once
    the one before is written: a slow reader pauses the request's iterator (and
    whatever feeds it) instead of responses piling up here, so a stream holds at most
    one unwritten response per running request. Closing the stream closes (cancels)
    every iterator still running.
    """
    async for response in _answers(
        requests, None, answer, window, budget_bytes, size, request_size
    ):
        yield response


async def _answers(
    requests: AsyncIterator[Request],
    answer: Callable[[Request], Awaitable[Response]] | None,
    answer_many: Callable[[Request], AsyncIterator[Response]] | None,
    window: int,
    budget_bytes: int,
    size: Callable[[Response], int],
    request_size: Callable[[Request], int],
) -> AsyncGenerator[Response, None]:
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    if budget_bytes < 1:
        raise ValueError(f"budget_bytes must be at least 1, got {budget_bytes}")
    state: _Answering[Request, Response] = _Answering(window, budget_bytes, size)
    if answer is not None:
        run = partial(state.one, answer)
    else:
        assert answer_many is not None
        run = partial(state.many, answer_many)
    reader = asyncio.ensure_future(state.read(requests, run, request_size))
    try:
        while (item := await state.responses.get()) is not None:
            if isinstance(item, _Failed):
                raise item.error
            try:
                yield item.response
            finally:
                state.taken(item)
        await reader
    finally:
        reader.cancel()
        TRIMMER.soon()


class _Answering(Generic[Request, Response]):
    """One stream's running requests, their answers not yet written, and its budget."""

    def __init__(self, window: int, budget_bytes: int, size: Callable[[Response], int]) -> None:
        # Each queued answer holds a slot, so the queue never needs more room than this.
        self.responses: asyncio.Queue[_Item[Response] | _Failed | None] = asyncio.Queue(window + 1)
        self.slots = asyncio.Semaphore(window)
        self.budget = _Budget(budget_bytes)
        self.size = size

    async def one(
        self, answer: Callable[[Request], Awaitable[Response]], request: Request, rbytes: int
    ) -> None:
        """A request with one answer: its slot is freed once that is written."""
        try:
            response = await answer(request)
        except asyncio.CancelledError:
            self.budget.abandoned(rbytes)
            self.slots.release()
            raise
        except Exception as exc:  # noqa: BLE001 - handed to the caller, which ends the stream
            self.budget.abandoned(rbytes)
            self.responses.put_nowait(_Failed(exc))
            return
        nbytes = self.size(response)
        self.budget.made(nbytes, rbytes)
        self.responses.put_nowait(_Item(response, nbytes, None))

    async def many(
        self, answer: Callable[[Request], AsyncIterator[Response]], request: Request, rbytes: int
    ) -> None:
        """A request with many answers, each asked for once the one before is written."""
        loop = asyncio.get_running_loop()
        try:
            parts = answer(request)
            try:
                async for response in parts:
                    nbytes = self.size(response)
                    self.budget.produced(nbytes)
                    written: asyncio.Future[None] = loop.create_future()
                    self.responses.put_nowait(_Item(response, nbytes, written))
                    await written
            finally:
                await close_iterator(parts)
        except asyncio.CancelledError:
            self.budget.abandoned(rbytes)
            self.slots.release()
            raise
        except Exception as exc:  # noqa: BLE001 - handed to the caller, which ends the stream
            self.budget.abandoned(rbytes)
            self.responses.put_nowait(_Failed(exc))
            return
        self.budget.abandoned(rbytes)
        self.slots.release()  # its last response is written

    def taken(self, item: _Item[Response]) -> None:
        """The caller is back for the next answer: `item` is written."""
        self.budget.taken(item.size)
        if item.written is None:
            self.slots.release()
        elif not item.written.done():
            item.written.set_result(None)

    async def read(
        self,
        requests: AsyncIterator[Request],
        run: Callable[[Request, int], Coroutine[Any, Any, None]],
        request_size: Callable[[Request], int],
    ) -> None:
        """Start each request as a slot and the budget allow; None once all are answered."""
        tasks: set[asyncio.Task[None]] = set()
        source = aiter(requests)
        try:
            while True:
                await self.slots.acquire()
                await self.budget.admit()
                try:
                    request = await anext(source)
                except StopAsyncIteration:
                    self.budget.abandoned()
                    self.slots.release()
                    break
                rbytes = request_size(request)
                self.budget.read(rbytes)
                task = asyncio.create_task(run(request, rbytes))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            self.responses.put_nowait(None)


async def close_iterator(parts: AsyncIterator[Any]) -> None:
    """Close an async generator now (not when it is collected): a generation it runs
    is cancelled and frees what it holds."""
    aclose = getattr(parts, "aclose", None)
    if aclose is not None:
        await aclose()
