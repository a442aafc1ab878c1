"""The hostile suite's arithmetic: counting outcomes, the goals, the table, the JSON."""

from __future__ import annotations

import json
import random

from tools.hostile.mutated import mutate, seeds, truncations
from tools.hostile.report import Case, Category, Report, goals
from tools.hostile.requests import same_size_reference
from tools.hostile.wire import Outcome


def by_goal(category: Category, stall_goal_ms: float = 100.0) -> dict[str, bool]:
    return {g.goal: g.met for g in goals(category, stall_goal_ms)}


def test_outcomes_are_counted_by_code_and_server_faults_kept_as_examples() -> None:
    category = Category("handmade", "open")
    category.record("a", Outcome("INVALID_ARGUMENT", "invalid model name"))
    category.record("b", Outcome("INTERNAL", "internal error"))
    category.record("c", Outcome("UNKNOWN", "Unexpected <class 'KeyError'>"))
    assert category.sent == 3
    assert category.codes == {"INVALID_ARGUMENT": 1, "INTERNAL": 1, "UNKNOWN": 1}
    assert category.server_fault_count == 2
    assert [f["case"] for f in category.server_faults] == ["b", "c"]
    assert category.leak_count == 1 and category.leaks[0]["case"] == "c"
    assert by_goal(category) == {
        "no-leaks": False,
        "no-server-faults": False,
        "stall": True,
        "rss": True,
    }


def test_a_reply_field_is_inspected_without_being_counted_as_sent() -> None:
    category = Category("uploads", "open")
    category.inspect("reason", Outcome("OK", "Load model from /srv/data/x.onnx failed"), ["/srv/"])
    assert (category.sent, category.codes, category.leak_count) == (0, {}, 1)


def test_the_stall_goal_applies_to_one_request_at_a_time_only() -> None:
    single = Category("mutated", "open", stall_ms={"gateway": 150.0, "inference": 3.0})
    flood = Category("reset", "open", single=False, stall_ms={"gateway": 900.0})
    assert by_goal(single)["stall"] is False
    assert by_goal(single, stall_goal_ms=1000.0)["stall"] is True
    assert "stall" not in by_goal(flood)


def test_rss_counts_a_case_beyond_its_same_size_reference() -> None:
    category = Category("handmade", "open")
    category.cases.append(
        Case("padding", "INVALID_ARGUMENT", {"gateway": 300.0}, {"gateway": 80.0})
    )
    assert by_goal(category)["rss"] is True
    category.cases.append(Case("bytes", "INVALID_ARGUMENT", {"inference": 1500.0}))
    assert by_goal(category)["rss"] is False


def test_stream_rounds_and_bypasses_have_goals_of_their_own() -> None:
    streams = Category("streams", "open", single=False)
    streams.figures["second_round_mb"] = {"gateway": 3.0, "inference": 20.0}
    auth = Category("auth", "auth")
    auth.figures["bypasses"] = []
    assert by_goal(streams)["stream-rounds"] is False
    assert by_goal(auth)["no-bypass"] is True
    auth.figures["bypasses"] = ["limited key: ModelStatistics ''"]
    assert by_goal(auth)["no-bypass"] is False


def test_a_traceback_in_a_service_log_is_a_goal_not_met() -> None:
    category = Category("mutated", "open")
    category.figures["log_tracebacks"] = {"gateway": 0, "inference": 0}
    assert by_goal(category)["no-tracebacks"] is True
    category.figures["log_tracebacks"]["inference"] = 3
    assert by_goal(category)["no-tracebacks"] is False


def test_the_report_has_a_row_per_category_and_round_trips_as_json() -> None:
    category = Category("names", "auth", single=False, sent=2, codes={"NOT_FOUND": 2})
    category.figures["registry_calls"] = 0
    category.rss_growth_mb = {"gateway": 1.0}
    report = Report([category], {"profile": "short"}, "/logs", "abc123")
    table = report.table().splitlines()
    assert len(table) == 3 and "| auth | names | 2 | NOT_FOUND 2 |" in table[2]
    assert "registry_calls: 0" in table[2]
    data = json.loads(report.to_json())
    assert data["categories"][0]["codes"] == {"NOT_FOUND": 2}
    assert data["commit"] == "abc123"
    assert report.category("auth/names") is category


def test_the_summary_names_the_worst_case_and_the_goals_not_met() -> None:
    category = Category("handmade", "open", sent=1, codes={"INVALID_ARGUMENT": 1})
    category.stall_ms = {"gateway": 20.0, "inference": 1500.0}
    category.cases.append(Case("inference: padding", "INVALID_ARGUMENT", {"inference": 400.0}))
    row = Report([category], {}, "/logs").summary().splitlines()[2]
    assert "1,500 ms (inference)" in row and "400 MB (inference, padding)" in row
    assert "stall (1500 ms); rss (400 MB)" in row


def test_mutations_and_truncations_are_reproducible_and_bounded() -> None:
    base = seeds()[0]
    first = [mutate(base, random.Random(7)) for _ in range(3)]
    again = [mutate(base, random.Random(7)) for _ in range(3)]
    assert first == again and any(m != base for m in first)
    cut = truncations(base, 10, random.Random(1))
    assert len(cut) == 10 and all(base.startswith(c) and len(c) < len(base) for c in cut)
    assert len(truncations(b"abc", 10, random.Random(1))) == 3


def test_the_reference_request_has_the_size_asked_for() -> None:
    assert len(same_size_reference(1 << 20)) == 1 << 20
