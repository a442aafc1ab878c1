"""The trimmer hands freed heap memory back once streams stop ending: one trim a burst."""

from __future__ import annotations

import asyncio

import pytest

from services.common.trim import LOOKS, Trimmer


async def wait_for_trims(trimmer: Trimmer, count: int) -> None:
    async with asyncio.timeout(5):
        while trimmer.trims < count:
            await asyncio.sleep(0.01)  # polling with a deadline


async def test_a_burst_of_asks_is_one_trim() -> None:
    trimmer = Trimmer(quiet=0.05, most=1.0, again=0.01)
    if not trimmer.available:
        pytest.skip("no malloc_trim in this C library")
    for _ in range(100):
        trimmer.soon()
    looks = 1 + LOOKS  # the trim, and its later looks
    await wait_for_trims(trimmer, looks)
    await asyncio.sleep(0.1)  # time for one more, were there one: there must not be
    assert trimmer.trims == looks
    trimmer.soon()  # a later ask is a trim of its own
    await wait_for_trims(trimmer, 2 * looks)


async def test_asks_that_keep_coming_still_trim_within_most() -> None:
    trimmer = Trimmer(quiet=0.05, most=0.2, again=0.01)
    if not trimmer.available:
        pytest.skip("no malloc_trim in this C library")
    async with asyncio.timeout(5):
        while trimmer.trims == 0:
            trimmer.soon()
            await asyncio.sleep(0.01)  # asks closer together than `quiet`
