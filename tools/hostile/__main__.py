"""`python -m tools.hostile`: every hostile category against a whole system; table, JSON, goals."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from tools.hostile.report import STALL_GOAL_MS
from tools.hostile.run import CATEGORIES, FULL, SHORT, run_hostile


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.hostile", description=__doc__)
    parser.add_argument("--short", action="store_true", help="the short run of make test")
    parser.add_argument("--only", default="", help=f"comma-separated, some of {list(CATEGORIES)}")
    parser.add_argument("--folder", default=".data/hostile/runs", help="logs and data of the run")
    parser.add_argument("--report", default="bench/results/hostile.json", help="the JSON report")
    parser.add_argument(
        "--stall-goal-ms", type=float, default=STALL_GOAL_MS, help="the stall goal, ms"
    )
    args = parser.parse_args(argv)
    only = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = [c for c in only if c not in CATEGORIES]
    if unknown:
        parser.error(f"unknown categories {unknown}: expected some of {list(CATEGORIES)}")
    folder = (Path(args.folder) / time.strftime("%Y%m%d-%H%M%S")).resolve()
    report = asyncio.run(run_hostile(folder, SHORT if args.short else FULL, only or None))
    print()
    print(report.table())
    print()
    print(report.summary(args.stall_goal_ms))
    print(f"\nlogs: {report.logs}")
    Path(args.report).parent.mkdir(parents=True, exist_ok=True)
    Path(args.report).write_text(report.to_json())
    print(f"report: {args.report}")
    unmet = report.unmet(args.stall_goal_ms)
    for goal in unmet:
        print(
            f"hostile: goal not met: {goal.category}: {goal.goal}: {goal.detail}", file=sys.stderr
        )
    return 1 if unmet else 0


if __name__ == "__main__":
    sys.exit(main())
