"""The pure parts of a benchmark: percentiles, per-level summaries, the results JSON."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

# 2 added each level's server CPU per request per hop and the goals; 1 still reads.
SCHEMA = "maas-bench/2"
SCHEMAS = ("maas-bench/1", SCHEMA)
PERCENTILES = (50, 90, 99)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation, as numpy's default."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Level:
    """One concurrency level of one target: what was sent, how fast, how long it took."""

    concurrency: int
    requests: int
    errors: int
    seconds: float
    throughput: float  # successful requests per second
    rows_per_second: float
    latency_ms: dict[str, float]  # p50, p90, p99, mean
    effective_batch: float | None = None  # rows per model execution on the server
    loadgen_cpu: float | None = None  # cores the load generator used
    server_cpu: float | None = None  # cores the server process used, when started here
    error_codes: dict[str, int] = field(default_factory=dict)
    # Server CPU (user + system) per request, µs, for each hop a request crosses
    # (gateway, inference, peer), over every request the level completed.
    cpu_us_per_request: dict[str, float] = field(default_factory=dict)
    completed: int | None = None  # every request the level completed, warm-up included


def cpu_per_request_us(cpu_seconds: dict[str, float], completed: int) -> dict[str, float]:
    """µs of CPU per request for each hop, from its CPU seconds over `completed` requests."""
    if completed <= 0:
        return {}
    return {hop: round(seconds * 1e6 / completed, 1) for hop, seconds in cpu_seconds.items()}


def summarize(
    concurrency: int,
    latencies_s: Sequence[float],
    seconds: float,
    *,
    rows_per_request: int = 1,
    errors: int = 0,
    **extra: Any,
) -> Level:
    """A Level from the latencies (seconds) of the requests that succeeded in `seconds`."""
    ms = [x * 1000 for x in latencies_s]
    latency = {f"p{q}": round(percentile(ms, q), 4) for q in PERCENTILES}
    latency["mean"] = round(sum(ms) / len(ms), 4) if ms else math.nan
    rate = len(ms) / seconds if seconds > 0 else 0.0
    return Level(
        concurrency=concurrency,
        requests=len(ms),
        errors=errors,
        seconds=round(seconds, 3),
        throughput=round(rate, 2),
        rows_per_second=round(rate * rows_per_request, 2),
        latency_ms=latency,
        **extra,
    )


@dataclass
class Series:
    """One target (with one configuration) measured at several concurrency levels."""

    label: str  # shown in tables and plots, e.g. "inference (batching on)"
    target: str  # ort, inference, gateway, pytriton, kserve, perf_analyzer
    model: str
    address: str | None = None
    batching: bool | None = None
    notes: str = ""
    levels: list[Level] = field(default_factory=list)

    def at(self, concurrency: int) -> Level | None:
        """The level measured at `concurrency`, if any."""
        return next((lv for lv in self.levels if lv.concurrency == concurrency), None)


def results_document(
    series: Sequence[Series], machine: dict[str, Any], config: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    """The results JSON: everything measured, where and how."""
    return {
        "schema": SCHEMA,
        "machine": machine,
        "config": config,
        "series": [asdict(s) for s in series],
        **extra,
    }


_LEVEL_KEYS = {"concurrency", "requests", "errors", "seconds", "throughput", "latency_ms"}


def validate(document: dict[str, Any]) -> list[str]:
    """What is wrong with a results document; empty when it is well-formed."""
    problems = []
    if document.get("schema") not in SCHEMAS:
        problems.append(f"schema is {document.get('schema')!r}, expected {SCHEMA!r}")
    for key in ("machine", "config", "series"):
        if key not in document:
            problems.append(f"missing '{key}'")
    for i, s in enumerate(document.get("series", [])):
        for key in ("label", "target", "model", "levels"):
            if key not in s:
                problems.append(f"series {i}: missing '{key}'")
        for j, level in enumerate(s.get("levels", [])):
            missing = _LEVEL_KEYS - set(level)
            if missing:
                problems.append(f"series {i} level {j}: missing {sorted(missing)}")
            elif set(level["latency_ms"]) < {"p50", "p90", "p99"}:
                problems.append(f"series {i} level {j}: latency_ms lacks p50/p90/p99")
            problems += _cpu_problems(f"series {i} level {j}", level)
    return problems + _goal_problems(document.get("goals", []))


def _cpu_problems(where: str, level: dict[str, Any]) -> list[str]:
    hops = level.get("cpu_us_per_request", {})
    if isinstance(hops, dict) and all(isinstance(v, int | float) and v >= 0 for v in hops.values()):
        return []
    return [f"{where}: cpu_us_per_request must map hops to µs >= 0, got {hops!r}"]


def _goal_problems(goals: list[dict[str, Any]]) -> list[str]:
    problems = []
    for i, goal in enumerate(goals):
        missing = {"goal", "title", "met", "checks"} - set(goal)
        if missing:
            problems.append(f"goal {i}: missing {sorted(missing)}")
        elif goal["met"] not in (True, False, None):
            problems.append(f"goal {i}: met must be true, false or null, got {goal['met']!r}")
    return problems


def series_from_document(document: dict[str, Any]) -> list[Series]:
    """The Series of a results document read back from JSON."""
    out = []
    for s in document["series"]:
        levels = [Level(**lv) for lv in s["levels"]]
        out.append(Series(**{**s, "levels": levels}))
    return out
