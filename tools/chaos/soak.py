"""`python -m tools.chaos.soak`: the system under fixed concurrency for a long while,
with every service's RSS and open file descriptors sampled from /proc.

After the warm-up, the median of the last samples may exceed the median of the first
ones by less than `--max-growth` (10%); otherwise the exit status is 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tools.chaos.load import OK, Load, LoadOptions
from tools.chaos.run import cleanup_on_signals, machine
from tools.chaos.system import System

EDGE = 3  # samples whose median stands for the start and for the end


@dataclass
class Sample:
    """One look at one process."""

    t: float
    rss_kib: int
    fds: int


def sample(pid: int, t: float) -> Sample:
    """VmRSS from /proc/<pid>/status and the number of entries in /proc/<pid>/fd."""
    rss = 0
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return Sample(t, rss, len(os.listdir(f"/proc/{pid}/fd")))


@dataclass
class Growth:
    """One service's samples after the warm-up, and how much they grew."""

    service: str
    samples: list[Sample] = field(default_factory=list)

    def _edges(self, attr: str) -> tuple[float, float]:
        values = [getattr(s, attr) for s in self.samples]
        return statistics.median(values[:EDGE]), statistics.median(values[-EDGE:])

    def growth(self, attr: str) -> float:
        first, last = self._edges(attr)
        return (last - first) / first if first else 0.0

    def row(self) -> str:
        rss0, rss1 = self._edges("rss_kib")
        fd0, fd1 = self._edges("fds")
        peak = max(s.rss_kib for s in self.samples)
        return (
            f"| {self.service} | {rss0 / 1024:.1f} | {rss1 / 1024:.1f} | {peak / 1024:.1f} "
            f"| {100 * self.growth('rss_kib'):+.1f}% | {fd0:.0f} | {fd1:.0f} "
            f"| {100 * self.growth('fds'):+.1f}% |"
        )


async def soak(
    folder: Path, seconds: float, warmup: float, interval: float, load_options: LoadOptions
) -> tuple[list[Growth], Load]:
    """Run the load for `seconds`, sampling every `interval`; samples before `warmup` drop."""
    system = System(folder, replicas=2)
    with cleanup_on_signals(system, None):
        await system.start()
        load = Load(system.gateway.address if system.gateway else "", load_options)
        growth = {s.name: Growth(s.name) for s in system.services}
        start = time.monotonic()
        next_report = 0.0
        load.start()
        try:
            while (elapsed := time.monotonic() - start) < seconds:
                for service in system.services:
                    if not service.alive():
                        raise RuntimeError(f"{service.name} exited; see {service.log_path}")
                    if elapsed >= warmup:
                        growth[service.name].samples.append(sample(service.pid, elapsed))
                if elapsed >= next_report:
                    print(f"soak: {elapsed:.0f}s, {len(load.records)} requests", flush=True)
                    next_report += seconds / 10
                await asyncio.sleep(interval)
        finally:
            await load.stop()
    return list(growth.values()), load


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.chaos.soak", description=__doc__)
    parser.add_argument(
        "--seconds",
        type=float,
        default=float(os.environ.get("SOAK_SECONDS", 600)),
        help="how long (default $SOAK_SECONDS, else 600)",
    )
    parser.add_argument("--warmup", type=float, help="seconds not judged (default a fifth)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients")
    parser.add_argument("--rate", type=float, default=25.0, help="requests/s per client")
    parser.add_argument("--max-growth", type=float, default=0.10, help="allowed growth, 0.10=10%")
    parser.add_argument("--folder", default=".data/soak", help="logs and data of the run")
    parser.add_argument("--json", default="bench/results/soak.json", help="write the report here")
    args = parser.parse_args(argv)
    warmup = args.warmup if args.warmup is not None else args.seconds / 5
    interval = max(1.0, (args.seconds - warmup) / 60)  # about 60 samples a service
    options = LoadOptions(
        clients=args.clients, rate_per_client=args.rate, max_seconds=args.seconds + 60
    )
    folder = Path(args.folder) / time.strftime("%Y%m%d-%H%M%S")
    at_start = machine()
    growths, load = asyncio.run(soak(folder, args.seconds, warmup, interval, options))
    failed = sum(r.status != OK for r in load.records)
    print(
        f"\nsoak: {args.seconds:.0f}s at {args.clients} clients x {args.rate:g}/s, "
        f"warm-up {warmup:.0f}s: {len(load.records)} requests, {failed} failed\n"
    )
    print(
        "| service | RSS MiB after warm-up | RSS MiB at end | peak | growth | fds after warm-up "
        "| fds at end | growth |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for g in growths:
        print(g.row())
    report = {
        "machine": at_start,
        "seconds": args.seconds,
        "warmup_s": warmup,
        "load": asdict(options),
        "requests": len(load.records),
        "failed": failed,
        "services": {
            g.service: {
                "rss_growth": g.growth("rss_kib"),
                "fd_growth": g.growth("fds"),
                "samples": [asdict(s) for s in g.samples],
            }
            for g in growths
        },
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(f"\nreport: {args.json}; logs: {folder / 'logs'}")
    over = [
        f"{g.service} {what} grew {100 * g.growth(attr):.1f}%"
        for g in growths
        for what, attr in (("RSS", "rss_kib"), ("open fds", "fds"))
        if g.growth(attr) >= args.max_growth
    ]
    for line in over:
        print(f"soak: over {100 * args.max_growth:.0f}%: {line}", file=sys.stderr)
    if len(growths[0].samples) < 2 * EDGE:
        print("soak: too few samples after the warm-up to judge growth", file=sys.stderr)
        return 1
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
