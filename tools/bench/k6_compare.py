"""Three load generators on one stack: `python -m tools.bench.k6_compare` (make bench-k6).

One inference service (batching on) serving the bench's digits model and one gateway in
front of it, both with their defaults. Each target, direct and through the gateway, is
driven at each concurrency by ours (tools.bench.loadgen: Python grpc.aio processes), by
k6 (Go, tools/bench/k6.py) and by Triton's perf_analyzer (C++, where
`tools/bench/venvs.sh perf` built it), one after the other and repeated over rounds, so
the generators' figures come from the same servers in the same minutes. Where two
generators disagree, the load generator is part of what is measured: on a machine with
few cores it competes with the servers for them (the loadgen cores column).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from tools.bench import k6, models, perf_analyzer
from tools.bench.cpu import hops_cpu_seconds, spent
from tools.bench.measure import grpc_level, server_counts
from tools.bench.servers import (
    ROOT,
    batching_config,
    start_gateway,
    start_inference,
    wait_for_grpc_ready,
)
from tools.bench.stats import Level, cpu_per_request_us

MODEL = "digits"
GENERATORS = ("ours", "k6", "perf_analyzer")


def _row(level: Level) -> dict[str, Any]:
    return {
        "rps": level.throughput,
        "p50_ms": level.latency_ms["p50"],
        "p99_ms": level.latency_ms["p99"],
        "errors": level.errors,
        "loadgen_cores": level.loadgen_cpu,
        "cpu_us_per_request": level.cpu_us_per_request,
    }


def run(
    concurrency: list[int],
    seconds: float,
    rounds: int,
    say: Callable[[str], None],
    generators: Sequence[str] = GENERATORS,
) -> dict[str, Any]:
    """Every generator at every level of both targets; the figures of each round."""
    model = models.load(MODEL)
    payloads = models.payloads(model, MODEL)
    inference = start_inference(MODEL, model.path, batching_config(True))
    results: dict[str, Any] = {}
    notes: list[str] = []
    try:
        wait_for_grpc_ready(inference.address, MODEL, inference)
        gateway = start_gateway([inference.address])
        try:
            wait_for_grpc_ready(gateway.address, MODEL, gateway)
            targets = {
                "direct": (inference.address, {"inference": [inference.pid]}),
                "gateway": (
                    gateway.address,
                    {"gateway": [gateway.pid], "inference": [inference.pid]},
                ),
            }
            for name, (address, hops) in targets.items():
                for c in concurrency:
                    target = Target(name, address, hops, inference.address)
                    runs: dict[str, list[dict[str, Any]]] = {g: [] for g in generators}
                    for _ in range(rounds):
                        measured = _round(target, c, seconds, payloads, generators)
                        for generator, (level, why) in measured:
                            if why:
                                notes.append(f"{generator} {name} c={c}: {why}")
                            if level is not None:
                                runs[generator].append(_row(level))
                    results[f"{name} c={c}"] = runs
                    say(_line(name, c, runs))
        finally:
            gateway.stop()
    finally:
        inference.stop()
    return {
        "model": MODEL,
        "seconds": seconds,
        "rounds": rounds,
        "results": results,
        "notes": notes,
    }


@dataclass(frozen=True)
class Target:
    """Where the load goes, the processes of each hop, and where ModelStatistics are."""

    name: str
    address: str
    hops: Mapping[str, Sequence[int]]
    stats_address: str


def _round(
    target: Target,
    c: int,
    seconds: float,
    payloads: tuple[bytes, ...],
    generators: Sequence[str],
) -> list[tuple[str, tuple[Level | None, str]]]:
    """One level of each generator in turn, against the same servers."""
    out: list[tuple[str, tuple[Level | None, str]]] = []
    if "ours" in generators:
        ours = grpc_level(
            target.address,
            MODEL,
            payloads,
            c,
            seconds,
            stats_address=target.stats_address,
            hops=target.hops,
        )
        out.append(("ours", (ours, "")))
    if "k6" in generators:
        by_k6 = k6.measure(target.address, MODEL, c, seconds, payload=payloads[0], hops=target.hops)
        out.append(("k6", by_k6))
    if "perf_analyzer" in generators:
        by_pa = _counted(
            partial(perf_analyzer.measure, target.address, MODEL, c, int(seconds * 1000)),
            target.hops,
            target.stats_address,
        )
        out.append(("perf_analyzer", by_pa))
    return out


def _counted(
    load: Callable[[], tuple[Level | None, str]],
    hops: Mapping[str, Sequence[int]],
    stats_address: str,
) -> tuple[Level | None, str]:
    """A level from a generator that reports neither its CPU nor the servers' (perf_analyzer),
    with both added: its cores from rusage, server µs per request over the requests
    inference counted in ModelStatistics meanwhile (its trials and warm-up included)."""
    counts_before, cpu_before = server_counts(stats_address, MODEL), hops_cpu_seconds(hops)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    level, why = load()
    elapsed = time.monotonic() - started
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    counts_after, cpu_after = server_counts(stats_address, MODEL), hops_cpu_seconds(hops)
    if level is None:
        return level, why
    cores = (used.ru_utime + used.ru_stime - children.ru_utime - children.ru_stime) / elapsed
    level = replace(level, loadgen_cpu=round(cores, 2))
    if counts_before and counts_after and cpu_before is not None and cpu_after is not None:
        completed = counts_after[0] - counts_before[0]
        per_request = cpu_per_request_us(spent(cpu_before, cpu_after), completed)
        level = replace(level, cpu_us_per_request=per_request, completed=completed)
    return level, why


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return round(statistics.median(values), 2) if values else None


def _cpu(runs: list[dict[str, Any]]) -> float | None:
    sums = [sum(r["cpu_us_per_request"].values()) for r in runs if r["cpu_us_per_request"]]
    return round(statistics.median(sums)) if sums else None


def _line(name: str, c: int, runs: dict[str, list[dict[str, Any]]]) -> str:
    parts = [f"{name} c={c}:"]
    for generator, rows in runs.items():
        parts.append(
            f"{generator} {_median(rows, 'rps')} req/s p50 {_median(rows, 'p50_ms')} ms"
            f" p99 {_median(rows, 'p99_ms')} ms cpu {_cpu(rows)} µs/req"
            f" loadgen {_median(rows, 'loadgen_cores')} cores;"
        )
    return " ".join(parts)


def table(document: dict[str, Any]) -> str:
    """The markdown table for docs/benchmarks.md: medians over the rounds."""
    head = (
        "| target | c | generator | req/s | vs ours | p50 ms | p99 ms "
        "| server CPU µs/req | loadgen cores | errors |\n"
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = []
    for key, runs in document["results"].items():
        target, c = key.split(" c=")
        ours = _median(runs.get("ours", []), "rps")
        for generator, rows in runs.items():
            if not rows:
                lines.append(f"| {target} | {c} | {generator} | - | - | - | - | - | - | - |")
                continue
            rps = _median(rows, "rps")
            ratio = f"{rps / ours:.2f}x" if rps and ours else "-"
            cpu = _cpu(rows)
            cores = _median(rows, "loadgen_cores")
            errors = sum(r["errors"] for r in rows)
            lines.append(
                f"| {target} | {c} | {generator} | {rps:,.0f} | {ratio} "
                f"| {_median(rows, 'p50_ms')} | {_median(rows, 'p99_ms')} "
                f"| {cpu if cpu is not None else '-'} | {cores if cores is not None else '-'} "
                f"| {errors} |"
            )
    return head + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", default="1,16", help="levels, comma-separated")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds a level")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--generators", default=",".join(GENERATORS), help="some of " + ",".join(GENERATORS)
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "k6.json")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    generators = [g.strip() for g in args.generators.split(",") if g.strip()]
    unknown = sorted(set(generators) - set(GENERATORS))
    if unknown:
        parser.error(f"unknown generators {unknown}, expected some of {list(GENERATORS)}")
    document = run(levels, args.seconds, args.rounds, say=print, generators=generators)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(table(document), end="")  # noqa: T201 - the command's output
    for note in document["notes"]:
        print(f"note: {note}")  # noqa: T201
    print(f"wrote {args.out}")  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
