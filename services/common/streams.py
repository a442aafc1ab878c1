"""Answering a bidirectional stream's requests concurrently, with backpressure."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

Request = TypeVar("Request")
Response = TypeVar("Response")


async def answer_each(
    requests: AsyncIterator[Request],
    answer: Callable[[Request], Awaitable[Response]],
    window: int,
) -> AsyncIterator[Response]:
    """Yield `answer(request)` for every request, in the order they finish.

    Requests run concurrently (so a stream's requests batch together), at most
    `window` at a time: beyond it, reading the stream pauses. `answer` must turn
    its own failures into responses; the stream ends when the requests do and
    every answer is out, and anything still running is cancelled if the caller
    goes away.
    """
    responses: asyncio.Queue[Response | None] = asyncio.Queue()
    slots = asyncio.Semaphore(window)

    async def one(request: Request) -> None:
        try:
            responses.put_nowait(await answer(request))
        finally:
            slots.release()

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
            yield response
        await reader
    finally:
        reader.cancel()
