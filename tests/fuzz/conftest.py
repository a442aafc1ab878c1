"""Fuzz-suite hooks: per-target time limits, a summary, and the JSON report.

FUZZ_SECONDS sets each target's budget (20 s in `make test`, longer in
`make fuzz`). FUZZ_REPORT names a JSON file to write the figures to:
executions and crashes per target from this run, and per target the crashes
found so far (regression tests marked `fuzz_regression`) and those still open
(the ones marked xfail).
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import pytest

from tests.fuzz.harness import RESULTS, fuzz_seconds

# Target -> the regression tests (parametrized cases counted once) and the open ones.
_REGRESSIONS: dict[str, dict[str, set[str]]] = {}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "fuzz_regression(target): a crash the fuzzer found in `target`, kept as a test"
    )
    config.addinivalue_line("markers", "fuzz_target: a time-bounded fuzz run (FUZZ_SECONDS)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    limit = int(fuzz_seconds() * 3 + 120)
    for item in items:
        if item.get_closest_marker("fuzz_target"):
            item.add_marker(pytest.mark.timeout(limit))
        marker = item.get_closest_marker("fuzz_regression")
        if marker:
            tests = _REGRESSIONS.setdefault(marker.args[0], {"found": set(), "open": set()})
            test = item.nodeid.split("[")[0]
            tests["found"].add(test)
            if item.get_closest_marker("xfail"):
                tests["open"].add(test)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not RESULTS:
        return
    terminalreporter.section(f"fuzz: {fuzz_seconds():g} s per target")
    for result in RESULTS.values():
        terminalreporter.write_line(
            f"{result.target:<28} {result.executions:>9} executions "
            f"{result.crashes:>3} crashes {result.seconds:>7.1f} s"
        )


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = os.environ.get("FUZZ_REPORT")
    if not path or not RESULTS:
        return
    targets = sorted(set(RESULTS) | set(_REGRESSIONS))
    empty: dict[str, set[str]] = {"found": set(), "open": set()}
    report = {
        "fuzz_seconds": fuzz_seconds(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "targets": {
            name: {
                "executions": RESULTS[name].executions if name in RESULTS else 0,
                "crashes_this_run": RESULTS[name].crashes if name in RESULTS else 0,
                "seconds": round(RESULTS[name].seconds, 1) if name in RESULTS else 0.0,
                "failures": RESULTS[name].failures if name in RESULTS else [],
                "open_crash_hits": RESULTS[name].known_open if name in RESULTS else 0,
                "crashes_found": len(_REGRESSIONS.get(name, empty)["found"]),
                "crashes_open": len(_REGRESSIONS.get(name, empty)["open"]),
                "regression_tests": sorted(_REGRESSIONS.get(name, empty)["found"]),
            }
            for name in targets
        },
    }
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
