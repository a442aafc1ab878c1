"""answer_each: concurrent answers, and a window that bounds memory, not only compute."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from services.common.streams import answer_each


class Counting:
    """Requests 0..n-1, counting how many were read and how many answers were made."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.read = 0
        self.answered = 0

    async def requests(self) -> AsyncIterator[int]:
        for i in range(self.n):
            self.read += 1
            yield i

    async def answer(self, request: int) -> int:
        self.answered += 1
        return request * 10


async def settle() -> None:
    """Let every runnable task run until all of them wait (no timers are involved)."""
    for _ in range(200):
        await asyncio.sleep(0)


async def test_a_caller_that_stops_taking_answers_stops_the_stream_at_the_window() -> None:
    source = Counting(1000)
    stream = answer_each(source.requests(), source.answer, 4)
    first = await anext(stream)  # taken, and not yet written: its slot is still held
    await settle()
    # Before the fix every request was read and answered, and the answers queued.
    assert source.answered <= 4, f"{source.answered} answers made for a caller that took one"
    assert source.read <= 5  # the one read beyond the window waits for a slot
    rest = [answer async for answer in stream]  # reading again resumes the stream
    assert sorted([first, *rest]) == [i * 10 for i in range(1000)]
    assert source.answered == 1000


async def test_answers_run_concurrently_up_to_the_window() -> None:
    """Once the first answer is made (its size is known: see test_streams_budget)."""
    running = 0
    most = 0
    release = asyncio.Event()

    async def answer(request: int) -> int:
        nonlocal running, most
        if request == 0:
            return request
        running += 1
        most = max(most, running)
        if running == 8:
            release.set()
        await release.wait()
        running -= 1
        return request

    async def requests() -> AsyncIterator[int]:
        for i in range(21):
            yield i

    got = [answer async for answer in answer_each(requests(), answer, 8)]
    assert sorted(got) == list(range(21)) and most == 8


async def test_an_answer_that_raises_ends_the_stream_with_its_error() -> None:
    async def answer(request: int) -> int:
        if request == 3:
            raise RuntimeError("broken answer")
        return request

    async def requests() -> AsyncIterator[int]:
        for i in range(10):
            yield i

    with pytest.raises(RuntimeError, match="broken answer"):
        async for _ in answer_each(requests(), answer, 2):
            pass


async def test_a_caller_that_goes_away_cancels_what_is_running() -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def answer(request: int) -> int:
        if request == 0:
            return 0
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return request

    async def requests() -> AsyncIterator[int]:
        for i in range(3):
            yield i

    stream = answer_each(requests(), answer, 4)
    assert await anext(stream) == 0
    await started.wait()
    await stream.aclose()
    await asyncio.wait_for(cancelled.wait(), 10)


async def test_a_window_below_one_is_refused() -> None:
    async def requests() -> AsyncIterator[int]:
        yield 1

    async def answer(request: int) -> int:
        return request

    with pytest.raises(ValueError, match="window must be at least 1, got 0"):
        await anext(answer_each(requests(), answer, 0))
