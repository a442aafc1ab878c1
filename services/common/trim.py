"""Handing freed heap memory back to the system after streams end (glibc's malloc_trim).

Unread streams (issue B, item 4) leave hundreds of MB freed but still resident:
glibc keeps the freed blocks of its arenas mapped. After 200 such streams ended, a
gateway and an inference server in one process stayed 450-630 MB above where they
started, although Python's objects and tasks were back to their earlier counts.
`malloc_trim(0)` gave all but ~10-20 MB of it back. A fixed `MALLOC_MMAP_THRESHOLD_`
(64 KiB) gave most of it back too, but made 100 unary calls of 4 MiB 2-3 times
slower (every large buffer mmapped and faulted in afresh). `MALLOC_ARENA_MAX=2`
gave nothing back. So the trim runs here instead, once streams have stopped ending
for `QUIET_S`, off the event loop (ctypes releases the GIL).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from collections.abc import Callable

_log = logging.getLogger(__name__)
QUIET_S = 0.25
MOST_S = 10.0
AGAIN_S = 0.5
LOOKS = 8  # after the first trim, every AGAIN_S: 4 s in all


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None where the C library has none (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


class Trimmer:
    """Runs malloc_trim once no trim has been asked for during `quiet` seconds (so
    that a burst of streams ending, and grpc core letting go of their calls, is one
    trim), or `most` seconds after the first ask when asks keep coming; then
    LOOKS times more, `again` seconds apart."""

    def __init__(
        self, quiet: float = QUIET_S, most: float = MOST_S, again: float = AGAIN_S
    ) -> None:
        self.quiet, self.most, self.again = quiet, most, again
        self.trims = 0
        self._trim = _malloc_trim()
        self._pending: asyncio.Task[None] | None = None
        self._due = 0.0

    @property
    def available(self) -> bool:
        return self._trim is not None

    def soon(self) -> None:
        """Ask for a trim; asks made while one is pending put it off, up to `most`."""
        if self._trim is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._due = loop.time() + self.quiet
        if self._pending is None or self._pending.done():
            self._pending = loop.create_task(self._run(loop, loop.time() + self.most))

    async def _run(self, loop: asyncio.AbstractEventLoop, latest: float) -> None:
        assert self._trim is not None
        while (wait := min(self._due, latest) - loop.time()) > 0:
            await asyncio.sleep(wait)  # waiting for the asks to stop, not synchronisation
        await asyncio.to_thread(self._trim, 0)
        self.trims += 1
        # A few more looks: work a cancelled stream had started (a model run in its
        # thread) frees its buffers only when it finishes, seconds later.
        for _ in range(LOOKS):
            await asyncio.sleep(self.again)  # the next look, not synchronisation
            await asyncio.to_thread(self._trim, 0)
            self.trims += 1
        _log.debug("freed heap memory handed back (malloc_trim)")


TRIMMER = Trimmer()
