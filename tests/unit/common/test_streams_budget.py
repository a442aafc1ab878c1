"""answer_each's byte budget: a peer that never reads holds about the budget, not the window."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from google.protobuf import wrappers_pb2

from services.common.streams import answer_each, size_of


class Big:
    """Requests 0..n-1, each answered with `size` bytes; counts what was read and made."""

    def __init__(self, n: int, size: int) -> None:
        self.n = n
        self.size = size
        self.read = 0
        self.answered = 0

    async def requests(self) -> AsyncIterator[int]:
        for i in range(self.n):
            self.read += 1
            yield i

    def answer_of(self, request: int) -> bytes:
        return request.to_bytes(4, "big") * (self.size // 4)

    async def answer(self, request: int) -> bytes:
        self.answered += 1
        return self.answer_of(request)


async def settle() -> None:
    """Let every runnable task run until all of them wait (no timers are involved)."""
    for _ in range(200):
        await asyncio.sleep(0)


async def test_a_caller_that_stops_taking_answers_holds_about_the_budget() -> None:
    source = Big(1000, 1000)
    stream = answer_each(source.requests(), source.answer, 64, budget_bytes=3500)
    first = await anext(stream)  # taken, not yet written: its bytes are still held
    await settle()
    # Before the byte budget the whole window of 64 answers was made.
    assert source.answered <= 4, f"{source.answered} answers of 1000 bytes for a 3500 budget"
    assert source.read <= 4
    rest = [answer async for answer in stream]  # reading again resumes the stream
    assert sorted([first, *rest]) == sorted(source.answer_of(i) for i in range(1000))


async def test_an_answer_bigger_than_the_budget_still_goes_out() -> None:
    source = Big(5, 1000)
    got = [a async for a in answer_each(source.requests(), source.answer, 8, budget_bytes=10)]
    assert len(got) == 5


async def test_small_answers_run_concurrently_up_to_the_window() -> None:
    running = 0
    most = 0
    release = asyncio.Event()

    async def answer(request: int) -> bytes:
        nonlocal running, most
        if request == 0:  # the first answer runs alone: its size is not known before
            return b"x"
        running += 1
        most = max(most, running)
        if running == 8:
            release.set()
        await release.wait()
        running -= 1
        return b"x"

    async def requests() -> AsyncIterator[int]:
        for i in range(17):
            yield i

    got = [a async for a in answer_each(requests(), answer, 8, budget_bytes=1 << 20)]
    assert len(got) == 17 and most == 8


def test_sizes_are_bytes_for_bytes_and_byte_size_for_messages() -> None:
    message = wrappers_pb2.BytesValue(value=b"x" * 100)
    assert size_of(b"abc") == 3
    assert size_of(message) == message.ByteSize() > 100
    assert size_of(7) == 0


async def test_a_budget_below_one_byte_is_refused() -> None:
    async def requests() -> AsyncIterator[int]:
        yield 1

    async def answer(request: int) -> int:
        return request

    with pytest.raises(ValueError, match="budget_bytes must be at least 1, got 0"):
        await anext(answer_each(requests(), answer, 4, budget_bytes=0))
