"""The short chaos run of `make test`: the system as separate processes under steady
load through a replica SIGKILL, an alias flip and a rolling SIGTERM restart, with
generation streams of the smollm2 demo beside the unary load.

A stream cannot be retried once its tokens are out, so a stream that a SIGKILL cuts
is not a failure; one cut without a clear status is. An alias flip and a rolling
SIGTERM restart cut none: a draining replica finishes the streams it has.

The full run with every fault is `make chaos` (python -m tools.chaos).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tools.chaos.faults import SHORT
from tools.chaos.load import LoadOptions
from tools.chaos.run import Report, Row, run_chaos
from tools.chaos.streams import StreamOptions

# The smollm2 demo is built first when no current build is there (a few minutes).
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Report:
    folder = tmp_path_factory.mktemp("chaos")
    load = LoadOptions(clients=4, rate_per_client=20.0, deadline_s=3.0, max_seconds=240)
    streams = StreamOptions(clients=2, max_tokens=48, deadline_s=30)
    faults = ["baseline", "kill", "flip", "rolling"]
    ran = asyncio.run(run_chaos(folder, faults, SHORT, load, stream_options=streams))
    (folder / "chaos.json").write_text(ran.to_json())
    print(f"\n{ran.table()}\nlogs: {ran.logs}")
    return ran


def explain(row: Row) -> str:
    details = row.window.details if row.window else {}
    return f"{row.fault}: {row.sent} sent, {row.failed} failed: {details}"


def test_the_load_runs_clean_before_any_fault(report: Report) -> None:
    row = report.row("baseline")
    assert row.sent > 0 and row.failed == 0, explain(row)


def test_a_replica_killed_under_load_fails_no_request(report: Report) -> None:
    row = report.row("kill")
    assert row.sent > 0 and row.failed == 0, explain(row)


def test_an_alias_flip_under_load_fails_no_request(report: Report) -> None:
    row = report.row("flip")
    assert row.sent > 0 and row.failed == 0, explain(row)
    assert row.window is not None and "2" in row.window.versions, row.window


def test_a_rolling_restart_of_every_replica_fails_no_request(report: Report) -> None:
    row = report.row("rolling")
    assert row.sent > 0 and row.failed == 0, explain(row)


def test_generation_streams_run_whole_before_any_fault(report: Report) -> None:
    streams = report.row("baseline").streams
    assert streams is not None and streams.sent > 0, streams
    assert streams.complete == streams.sent, streams.details


@pytest.mark.parametrize("fault", ["kill", "flip", "rolling"])
def test_no_stream_is_cut_without_a_clear_status(report: Report, fault: str) -> None:
    streams = report.row(fault).streams
    assert streams is not None and streams.sent > 0, streams
    assert streams.silent == 0, streams.details


@pytest.mark.parametrize("fault", ["flip", "rolling"])
def test_an_alias_flip_and_a_rolling_restart_cut_no_stream(report: Report, fault: str) -> None:
    streams = report.row(fault).streams
    assert streams is not None and streams.sent > 0, streams
    assert streams.complete == streams.sent, streams.details


def test_the_run_left_its_logs(report: Report) -> None:
    assert sorted(p.name for p in Path(report.logs).glob("*.log")) == [
        "gateway.log",
        "inference-1.log",
        "inference-2.log",
        "registry.log",
    ]
