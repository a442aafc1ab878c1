"""The fuzz figures of one run as the Markdown table docs/reliability.md quotes.

`python -m tools.fuzz_report .data/fuzz/report.json` (what `make fuzz` writes).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def table(report: dict[str, Any]) -> str:
    """One row per target: executions and crashes this run, crashes found and still open."""
    lines = [
        "| Target | Executions | Crashes this run | Crashes found (regression tests) | Open |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, row in report["targets"].items():
        lines.append(
            f"| {name} | {row['executions']:,} | {row['crashes_this_run']} "
            f"| {row['crashes_found']} | {row['crashes_open']} |"
        )
    total = sum(row["executions"] for row in report["targets"].values())
    lines.append("")
    lines.append(
        f"{report['fuzz_seconds']:g} s per target, {total:,} executions in all "
        f"(Python {report['python']}, {report['cpus']} CPUs)."
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table of the report at the given path."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="the JSON that tests/fuzz wrote (FUZZ_REPORT)")
    args = parser.parse_args(argv)
    if not args.report.is_file():
        print(f"fuzz_report: no report at {args.report}", file=sys.stderr)
        return 1
    print(table(json.loads(args.report.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
