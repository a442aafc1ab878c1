"""answer_streams: many responses per request, with backpressure and cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from services.common.streams import answer_streams


async def settle() -> None:
    """Let every runnable task run until all of them wait (no timers are involved)."""
    for _ in range(200):
        await asyncio.sleep(0)


async def numbers(n: int) -> AsyncIterator[int]:
    for i in range(n):
        yield i


async def test_every_response_of_every_request_comes_in_its_request_order() -> None:
    async def answer(request: int) -> AsyncIterator[tuple[int, int]]:
        for part in range(request + 1):
            await asyncio.sleep(0)
            yield request, part

    got = [r async for r in answer_streams(numbers(6), answer, 3)]
    assert sorted(got) == [(r, p) for r in range(6) for p in range(r + 1)]
    for request in range(6):
        assert [p for r, p in got if r == request] == list(range(request + 1))


async def test_a_reader_that_stops_pauses_the_generation() -> None:
    pulled = 0

    async def answer(request: int) -> AsyncIterator[int]:
        nonlocal pulled
        while True:
            pulled += 1
            yield pulled

    stream = answer_streams(numbers(1), answer, 4)
    await anext(stream)  # taken and not yet written
    await settle()
    # Before answer_streams a generator ran ahead of its reader without bound.
    assert pulled == 1, f"{pulled} responses made for a reader that took one"
    await anext(stream)
    await settle()
    assert pulled == 2
    await stream.aclose()


async def test_a_request_holds_its_slot_until_its_last_response() -> None:
    finish = asyncio.Event()
    started: list[int] = []

    async def answer(request: int) -> AsyncIterator[int]:
        started.append(request)
        yield request
        await finish.wait()
        yield request

    stream = answer_streams(numbers(5), answer, 2)
    got = [await anext(stream), await anext(stream)]
    await settle()
    assert sorted(started) == [0, 1], "a third request ran beyond the window of 2"
    finish.set()
    got += [r async for r in stream]
    assert sorted(got) == sorted([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])


async def test_closing_the_stream_closes_every_running_generation() -> None:
    running = 0
    closed = 0
    both = asyncio.Event()

    async def answer(request: int) -> AsyncIterator[int]:
        nonlocal running, closed
        running += 1
        if running == 2:
            both.set()
        try:
            yield request
            await asyncio.Event().wait()
            yield request
        finally:
            closed += 1

    stream = answer_streams(numbers(2), answer, 4)
    await anext(stream)
    await anext(stream)
    await both.wait()
    await settle()
    await stream.aclose()
    await settle()
    assert closed == 2
