"""answer_each counts the requests still running in its byte budget, not only the answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from services.common.streams import answer_each


async def settle() -> None:
    """Let every runnable task run until all of them wait (no timers are involved)."""
    for _ in range(200):
        await asyncio.sleep(0)


async def test_large_requests_with_slow_small_answers_hold_about_the_budget() -> None:
    """Requests of 1000 bytes, answered with 1 byte once released: before, the budget
    saw only the 1-byte answers, so the whole window of 64 requests was read and held."""
    read = 0
    release = asyncio.Event()

    async def requests() -> AsyncIterator[bytes]:
        nonlocal read
        for i in range(200):
            read += 1
            yield i.to_bytes(4, "big") * 250

    async def answer(request: bytes) -> bytes:
        if request[:4] != bytes(4):  # the first runs alone and answers at once
            await release.wait()
        return request[:1]

    stream = answer_each(requests(), answer, 64, budget_bytes=3500)
    first = await anext(stream)
    await settle()
    assert read <= 5, f"{read} requests of 1000 bytes read for a 3500-byte budget"
    release.set()
    rest = [a async for a in stream]
    assert len([first, *rest]) == 200
