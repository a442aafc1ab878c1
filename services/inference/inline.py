"""Inline runs: when a model's run may take the event loop instead of a thread.

Handing a request to an instance's thread and its result back costs two cross-thread
wake-ups, tens to hundreds of µs of CPU, more than a small model's run on the CPU.
So for CPU sessions the scheduler runs on the event loop itself every run this
policy predicts under its bound: the lower quartile of the recent runs' time per
row, times the rows. A slower model, or one whose runs slow down, goes through the
threads again. An inline run that costs the loop far more CPU than predicted ends
inline runs for that version.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TypeVar

_log = logging.getLogger(__name__)
# Recent runs whose lower quartile of time per row predicts the next run: robust to
# the runs measured while their thread was descheduled (a busy machine: up to three
# in four), and to the odd run that was expensive.
RUN_TIMES_KEPT = 15
# An inline run that cost the loop's thread this many times the bound in CPU time
# (so not a run that was merely descheduled) shows the model's cost does not follow
# its rows: it never runs inline again.
TRIP = 20
T = TypeVar("T")


class InlinePolicy:
    """One model version's bound (0: never inline) and its recent run times."""

    def __init__(self, bound_ns: int) -> None:
        self.bound_ns = bound_ns
        self._row_times: deque[float] = deque(maxlen=RUN_TIMES_KEPT)
        self._row_ns: float | None = None  # None until a run was observed

    def allows(self, rows: int) -> bool:
        """Whether a run of `rows` rows may take the event loop."""
        return (
            self.bound_ns > 0 and self._row_ns is not None and self._row_ns * rows < self.bound_ns
        )

    def observe(self, rows: int, infer_ns: int) -> None:
        """A run of `rows` rows (inline or not) took `infer_ns`."""
        times = self._row_times
        times.append(infer_ns / max(rows, 1))
        self._row_ns = sorted(times)[len(times) // 4]

    def run(self, call: Callable[[], T]) -> T:
        """Run `call` here, on the event loop; should it cost this thread far more CPU
        than the bound, inline runs end."""
        started = time.thread_time_ns()
        result = call()
        cpu_ns = time.thread_time_ns() - started
        if cpu_ns <= TRIP * self.bound_ns:
            return result
        _log.warning(
            "a run predicted under %d µs took %d µs of the event loop's CPU; this model "
            "version's runs no longer run inline (set inline_run_us: 0 for a model whose "
            "cost depends on its values rather than its rows)",
            self.bound_ns // 1000,
            cpu_ns // 1000,
        )
        self.bound_ns = 0
        return result
