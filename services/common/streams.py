"""Answering a bidirectional stream's requests concurrently, with backpressure."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import TypeVar

Request = TypeVar("Request")
Response = TypeVar("Response")


class _Failed:
    """An answer that raised: the stream ends with its error."""

    def __init__(self, error: Exception) -> None:
        self.error = error


async def answer_each(
    requests: AsyncIterator[Request],
    answer: Callable[[Request], Awaitable[Response]],
    window: int,
) -> AsyncGenerator[Response, None]:
    """Yield `answer(request)` for every request, in the order they finish.

    Requests run concurrently (so a stream's requests batch together), and at most
    `window` answers exist at a time, whether running, waiting to be taken or being
    written: a slot is freed only once the caller comes back for the next answer,
    that is once it has written the last one. Beyond the window, reading the stream
    pauses, so a peer that reads slowly holds `window` answers of server memory, not
    one per request it sent. `answer` must turn its own failures into responses; the
    stream ends when the requests do and every answer is out, and anything still
    running is cancelled if the caller goes away.
    """
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    # Each queued answer holds a slot, so the queue never needs more room than this.
    responses: asyncio.Queue[Response | _Failed | None] = asyncio.Queue(window + 1)
    slots = asyncio.Semaphore(window)

    async def one(request: Request) -> None:
        try:
            response: Response | _Failed = await answer(request)
        except asyncio.CancelledError:
            slots.release()
            raise
        except Exception as exc:  # noqa: BLE001 - handed to the caller, which ends the stream
            response = _Failed(exc)
        responses.put_nowait(response)

    async def read() -> None:
        tasks: set[asyncio.Task[None]] = set()
        try:
            async for request in requests:
                await slots.acquire()
                task = asyncio.ensure_future(one(request))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            responses.put_nowait(None)

    reader = asyncio.ensure_future(read())
    try:
        while (response := await responses.get()) is not None:
            if isinstance(response, _Failed):
                raise response.error
            try:
                yield response
            finally:
                slots.release()  # the caller is back: the answer is written
        await reader
    finally:
        reader.cancel()
