"""`python -m tools.chaos`: every fault under steady load; the table, JSON, and the goals."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from tools.chaos.faults import FAULTS, FULL, SHORT
from tools.chaos.load import LoadOptions
from tools.chaos.run import run_chaos
from tools.chaos.streams import StreamOptions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.chaos", description=__doc__)
    parser.add_argument("--short", action="store_true", help="the short faults of make test")
    parser.add_argument(
        "--faults",
        default=",".join(FAULTS),
        help=f"comma-separated, in order (default all: {','.join(FAULTS)})",
    )
    parser.add_argument("--replicas", type=int, default=2, help="replicas on this host")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients")
    parser.add_argument("--rate", type=float, default=25.0, help="requests/s per client")
    parser.add_argument("--deadline", type=float, default=3.0, help="each request's deadline, s")
    parser.add_argument("--slow", type=float, default=1.0, help="slower than this is disrupted")
    parser.add_argument(
        "--streams",
        type=int,
        default=2,
        help="clients running smollm2 generation streams beside the load (0: none)",
    )
    parser.add_argument("--stream-tokens", type=int, default=48, help="max_tokens of each stream")
    parser.add_argument("--folder", default=".data/chaos", help="logs and data of the run")
    parser.add_argument("--json", default="bench/results/chaos.json", help="write the report here")
    args = parser.parse_args(argv)
    faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    unknown = [f for f in faults if f not in FAULTS]
    if unknown:
        parser.error(f"unknown faults {unknown}: expected some of {list(FAULTS)}")
    load = LoadOptions(
        clients=args.clients, rate_per_client=args.rate, deadline_s=args.deadline, slow_s=args.slow
    )
    streams = (
        StreamOptions(clients=args.streams, max_tokens=args.stream_tokens)
        if args.streams > 0
        else None
    )
    folder = Path(args.folder) / time.strftime("%Y%m%d-%H%M%S")
    profile = SHORT if args.short else FULL
    report = asyncio.run(run_chaos(folder, faults, profile, load, args.replicas, streams))
    print()
    print(report.table())
    print(f"\nlogs: {report.logs}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(report.to_json())
    print(f"report: {args.json}")
    unmet = report.unmet()
    for row in unmet:
        silent = row.streams.silent if row.streams else 0
        print(
            f"chaos: goal not met: {row.fault}: {row.failed} failed, expected 0; "
            f"{silent} streams cut without a status, expected 0",
            file=sys.stderr,
        )
    return 1 if unmet else 0


if __name__ == "__main__":
    sys.exit(main())
