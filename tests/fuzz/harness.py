"""Time-bounded hypothesis runs that count their executions and crashes.

Hypothesis has no time budget of its own, and a count of examples says nothing
about time on a shared, noisy machine. So one target is a loop of short
hypothesis runs (fresh random seeds each) until FUZZ_SECONDS have passed; each
run generates, and shrinks whatever fails. A failure ends the loop and the test.
"""

from __future__ import annotations

import os
import resource
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

DEFAULT_SECONDS = 20.0
# Address space a target may add: an input that makes the code under test allocate
# more fails with MemoryError (a crash the run reports) instead of drawing the
# kernel's OOM killer onto a machine that others share.
HEADROOM_BYTES = 3 << 30


def fuzz_seconds() -> float:
    """Seconds per target: FUZZ_SECONDS, or 20 (the budget `make test` runs with)."""
    return float(os.environ.get("FUZZ_SECONDS", DEFAULT_SECONDS))


@dataclass
class Result:
    """What one target's run did."""

    target: str
    executions: int = 0
    crashes: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)
    # Inputs that hit a crash already kept as an open (xfail) regression test.
    known_open: int = 0


@dataclass(frozen=True)
class Known:
    """An open crash: `error` raised from `path` (a source file); the run goes on past it."""

    error: type[BaseException] | tuple[type[BaseException], ...]
    path: str

    def matches(self, exc: BaseException) -> bool:
        """Whether `exc` is this crash: the same type, raised in (or through) `path`."""
        frames = traceback.extract_tb(exc.__traceback__)
        return isinstance(exc, self.error) and any(f.filename.endswith(self.path) for f in frames)


RESULTS: dict[str, Result] = {}


def fuzz(
    target: str,
    strategy: st.SearchStrategy[Any],
    check: Callable[[Any], None],
    *,
    batch: int = 200,
    seconds: float | None = None,
    known: tuple[Known, ...] = (),
) -> Result:
    """Run `check` on values drawn from `strategy` for the time budget; re-raise a crash.

    `known` crashes are counted, not raised: each has its xfail regression test.
    """
    result = RESULTS.setdefault(target, Result(target))
    budget = fuzz_seconds() if seconds is None else seconds

    def body(value: Any) -> None:
        result.executions += 1
        try:
            check(value)
        except Exception as exc:
            if not any(k.matches(exc) for k in known):
                raise
            result.known_open += 1

    run = settings(
        max_examples=batch,
        deadline=None,
        database=None,
        derandomize=False,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=True,
        print_blob=True,
    )(given(strategy)(body))
    start = time.monotonic()
    limits = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (_address_space() + HEADROOM_BYTES, limits[1]))
    try:
        while time.monotonic() - start < budget:
            run()
    except Exception as exc:
        found = exc.exceptions if isinstance(exc, ExceptionGroup) else (exc,)
        result.crashes += len(found)
        result.failures.extend(f"{type(e).__name__}: {e}"[:300] for e in found)
        raise
    finally:
        resource.setrlimit(resource.RLIMIT_AS, limits)
        result.seconds += time.monotonic() - start
        print(
            f"fuzz {target}: {result.executions} executions, {result.crashes} crashes, "
            f"{result.known_open} hits of open crashes in {result.seconds:.1f} s"
        )
    return result


def _address_space() -> int:
    """This process's virtual memory size in bytes (Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
