"""Closed-loop load of streamed generations: N streams, each starting its next
request when the last one ends, for a fixed window; tokens counted as they arrive.

One driver is a function from a request index to the pieces of that generation,
so the served target (gRPC ModelStreamInfer through the gateway) and the engine
in-process are measured by the same code. Tokens are counted when they arrive, so
generations that straddle the window's edges count only their tokens inside it;
a final response's num_output_tokens corrects the count of its request (a piece
may hold more than one token).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from tools.bench.stats import percentile
from tools.chat import Piece

Driver = Callable[[int], AsyncIterator[Piece]]


@dataclass
class Record:
    """One generation: when it started, when its tokens came, how it ended."""

    start: float
    arrivals: list[tuple[float, int]] = field(default_factory=list)  # (time, tokens)
    done: bool = False
    error: str = ""

    @property
    def first(self) -> float | None:
        return self.arrivals[0][0] if self.arrivals else None

    @property
    def tokens(self) -> int:
        return sum(n for _, n in self.arrivals)


@dataclass(frozen=True)
class GenLevel:
    """One concurrency level of one target."""

    concurrency: int
    seconds: float
    requests_started: int
    requests_done: int
    errors: int
    output_tokens: int  # arrived inside the window
    tokens_per_second: float
    ttft_ms: dict[str, float]  # p50, p99, mean, of requests started in the window
    tpot_ms: dict[str, float]  # time per output token after the first, per request
    tokens_per_request: float  # mean, of the requests that finished
    error_samples: list[str] = field(default_factory=list)


async def measure(
    driver: Driver, concurrency: int, seconds: float, warmup: float = 1.0
) -> GenLevel:
    """`concurrency` streams for warmup + seconds; the window is the last `seconds`."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    start, end = t0 + warmup, t0 + warmup + seconds
    records: list[Record] = []
    counter = iter(range(1 << 62))

    async def stream() -> None:
        while loop.time() < end:
            record = Record(loop.time())
            records.append(record)
            await _one(driver, next(counter), record, loop)

    tasks = [asyncio.create_task(stream()) for _ in range(concurrency)]
    await asyncio.sleep(max(0.0, end - loop.time()))
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return summarize(records, concurrency, start, end)


async def _one(driver: Driver, index: int, record: Record, loop: asyncio.AbstractEventLoop) -> None:
    counted = 0
    generation = driver(index)
    try:
        async for piece in generation:
            n = 1 if piece.text else 0
            if piece.final and piece.output_tokens is not None:
                n = max(0, piece.output_tokens - counted)
            if n:
                record.arrivals.append((loop.time(), n))
                counted += n
            if piece.final:
                record.done = True
                return
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - an error is a measured outcome
        record.error = f"{type(exc).__name__}: {str(exc)[:200]}"
    finally:
        with contextlib.suppress(Exception):
            await generation.aclose()  # type: ignore[attr-defined]


def summarize(records: list[Record], concurrency: int, start: float, end: float) -> GenLevel:
    """The level's figures from its records and window."""
    seconds = end - start
    tokens = sum(n for r in records for t, n in r.arrivals if start <= t < end)
    in_window = [r for r in records if start <= r.start < end]
    ttft = [(r.first - r.start) * 1000 for r in in_window if r.first is not None]
    done = [r for r in records if r.done]
    tpot = [
        (r.arrivals[-1][0] - r.arrivals[0][0]) * 1000 / (r.tokens - r.arrivals[0][1])
        for r in done
        if r.arrivals and r.tokens - r.arrivals[0][1] > 0
    ]
    errors = [r.error for r in records if r.error]
    return GenLevel(
        concurrency=concurrency,
        seconds=round(seconds, 3),
        requests_started=len(in_window),
        requests_done=len(done),
        errors=len(errors),
        output_tokens=tokens,
        tokens_per_second=round(tokens / seconds, 2) if seconds > 0 else 0.0,
        ttft_ms=_percentiles(ttft),
        tpot_ms=_percentiles(tpot),
        tokens_per_request=round(sum(r.tokens for r in done) / len(done), 1) if done else 0.0,
        error_samples=sorted(set(errors))[:3],
    )


def _percentiles(values: list[float]) -> dict[str, float]:
    out = {f"p{q}": round(percentile(values, q), 2) for q in (50, 99)}
    out["mean"] = round(sum(values) / len(values), 2) if values else float("nan")
    out["n"] = len(values)
    return out
