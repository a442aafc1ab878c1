"""The harness's own arithmetic: fault windows, recovery time, growth, the table."""

from __future__ import annotations

import os

import pytest

from tools.chaos.load import OK, Load, Record
from tools.chaos.run import Report, Row
from tools.chaos.soak import Growth, Sample, sample


def load_with(*records: Record) -> Load:
    return Load("localhost:0", records=list(records))  # never started


def test_a_window_counts_the_requests_started_in_it_and_when_it_recovered() -> None:
    load = load_with(
        Record(9.0, 9.1, OK, "1"),  # before the window
        Record(10.0, 10.01, OK, "1"),
        Record(10.5, 13.5, "DEADLINE_EXCEEDED", "", "Deadline Exceeded"),
        Record(11.0, 12.5, OK, "1"),  # slow: counts for recovery, not as failed
        Record(14.0, 14.01, OK, "2"),
        Record(20.0, 20.01, "UNAVAILABLE", ""),  # after the window
    )
    window = load.window(10.0, 15.0, slow_s=1.0)
    assert (window.sent, window.failed) == (4, 1)
    assert window.statuses == {OK: 3, "DEADLINE_EXCEEDED": 1}
    assert window.versions == {"1": 2, "2": 1}
    assert window.recover_s == pytest.approx(3.5)
    assert window.details == {"DEADLINE_EXCEEDED: Deadline Exceeded": 1}
    assert window.failures_at == [(0.5, "DEADLINE_EXCEEDED")]


def test_a_window_without_trouble_recovers_in_zero_seconds() -> None:
    window = load_with(Record(1.0, 1.01, OK, "1")).window(0.0, 2.0, slow_s=1.0)
    assert (window.sent, window.failed, window.recover_s) == (1, 0, 0.0)


def test_a_goal_is_met_only_with_zero_failed_and_skipped_rows_say_why() -> None:
    kill = Row("kill", "replica SIGKILLed", True, sent=100, failed=1)
    hang = Row("hang", "replica SIGSTOPped", False, sent=100, failed=3)
    cut = Row("cut", "cut off", False, skipped="no nft")
    report = Report([kill, hang, cut], {}, {}, "logs")
    assert report.unmet() == [kill]
    table = report.table()
    assert "| replica SIGKILLed | 100 | 1 **goal: 0** |" in table
    assert "| cut off | - | - | - | skipped: no nft |" in table


def test_growth_compares_the_median_of_the_last_samples_with_the_first() -> None:
    g = Growth(
        "gateway", [Sample(t, rss, 20) for t, rss in enumerate([100, 90, 100, 200, 110, 110, 109])]
    )
    assert g.growth("rss_kib") == pytest.approx(0.10)  # one spike does not count
    assert g.growth("fds") == 0.0


def test_a_sample_reads_rss_and_fds_from_proc() -> None:
    s = sample(os.getpid(), 0.0)
    assert s.rss_kib > 1000 and s.fds >= 3
