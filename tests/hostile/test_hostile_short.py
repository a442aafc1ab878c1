"""The short hostile run of `make test`: every category of issue B once, against the
whole system as processes (`maas up --auth`'s start-up, ports 0), and its goals.

The full run, open and --auth, is `make hostile` (python -m tools.hostile); it
reports stalls against 100 ms. Here a stall is allowed up to 1 s: these machines
are shared and noisy. A category still failing names its item of issue B.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tools.hostile.report import RSS_GOAL_MB, STREAM_ROUND_GOAL_MB, Category, Report, goals
from tools.hostile.run import SHORT, run_hostile

pytestmark = pytest.mark.timeout(400)
STALL_LIMIT_MS = 1000.0
MODE = "auth"

# (goal, category) -> the items of issue B it waits for; removed as the fixes land.
OPEN: dict[tuple[str, str], str] = {}


def check(report: Report, goal: str, name: str) -> None:
    category = report.category(f"{MODE}/{name}")
    found = [g for g in goals(category, STALL_LIMIT_MS) if g.goal == goal]
    assert found, f"{goal} is not a goal of {name}"
    assert all(g.met for g in found), explain(category, found[0].detail)


def explain(category: Category, detail: str) -> str:
    return (
        f"{category.key}: {detail}; codes {category.codes}; server faults "
        f"{category.server_faults[:3]}; leaks {category.leaks[:3]}; stall {category.stall_ms}; "
        f"rss {category.rss_growth_mb}; figures {category.figures}"
    )


def cases(goal: str, names: list[str]) -> list[object]:
    out: list[object] = []
    for name in names:
        reason = OPEN.get((goal, name))
        marks = [pytest.mark.xfail(strict=False, reason=reason)] if reason else []
        out.append(pytest.param(name, marks=marks, id=name))
    return out


EVERY = list(SHORT.modes[MODE])
SINGLE = ["mutated", "handmade", "auth", "uploads"]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Report:
    folder = tmp_path_factory.mktemp("hostile")
    ran = asyncio.run(run_hostile(folder, SHORT))
    (folder / "hostile.json").write_text(ran.to_json())
    print(f"\n{ran.table()}\nlogs: {ran.logs}")
    return ran


def test_every_category_ran(report: Report) -> None:
    assert [c.name for c in report.categories] == EVERY
    assert all(c.sent > 0 for c in report.categories), report.table()
    # The cases reached the code under test: the harness holds the credentials it needs.
    handmade = report.category(f"{MODE}/handmade")
    assert "UNAUTHENTICATED" not in handmade.codes, handmade.codes


@pytest.mark.parametrize("name", cases("no-leaks", EVERY))
def test_no_message_leaks_a_path_a_class_name_or_a_traceback(report: Report, name: str) -> None:
    check(report, "no-leaks", name)


@pytest.mark.parametrize("name", cases("no-server-faults", EVERY))
def test_client_errors_never_come_back_internal_or_unknown(report: Report, name: str) -> None:
    check(report, "no-server-faults", name)


@pytest.mark.parametrize("name", cases("no-tracebacks", EVERY))
def test_bad_requests_log_no_traceback(report: Report, name: str) -> None:
    check(report, "no-tracebacks", name)


@pytest.mark.parametrize("name", cases("stall", SINGLE))
def test_one_hostile_request_stalls_no_event_loop_over_1s(report: Report, name: str) -> None:
    check(report, "stall", name)


@pytest.mark.parametrize("name", cases("rss", SINGLE))
def test_one_hostile_request_adds_under_256mb_beyond_a_legitimate_one(
    report: Report, name: str
) -> None:
    assert RSS_GOAL_MB == 256.0
    check(report, "rss", name)


@pytest.mark.parametrize("name", cases("expected-codes", ["handmade"]))
def test_each_hand_made_case_gets_the_code_the_issue_names(report: Report, name: str) -> None:
    check(report, "expected-codes", name)


@pytest.mark.parametrize("name", cases("threads-bounded", ["slowloris"]))
def test_idle_connections_do_not_each_cost_a_thread(report: Report, name: str) -> None:
    check(report, "threads-bounded", name)


@pytest.mark.parametrize("name", cases("slow-closed", ["slowloris"]))
def test_idle_and_half_open_connections_are_closed_by_the_server(report: Report, name: str) -> None:
    check(report, "slow-closed", name)


@pytest.mark.parametrize("name", cases("stream-rounds", ["streams"]))
def test_a_second_round_of_unread_streams_adds_under_16mb(report: Report, name: str) -> None:
    assert STREAM_ROUND_GOAL_MB == 16.0
    check(report, "stream-rounds", name)


@pytest.mark.parametrize("name", cases("no-bypass", ["auth"]))
def test_no_key_gets_past_its_allow_list_or_around_the_gateway(report: Report, name: str) -> None:
    check(report, "no-bypass", name)


@pytest.mark.parametrize("name", cases("others-unharmed", ["reset"]))
def test_a_rapid_reset_flood_costs_other_clients_no_errors(report: Report, name: str) -> None:
    category = report.category(f"{MODE}/{name}")
    assert category.figures["others_failed"] == 0, explain(category, "others failed")


@pytest.mark.parametrize("name", cases("nothing-half-visible", ["uploads"]))
def test_no_refused_upload_is_left_listed(report: Report, name: str) -> None:
    category = report.category(f"{MODE}/{name}")
    assert category.figures["half_visible"] == [], explain(category, "half-visible uploads")


def test_the_run_left_every_service_log(report: Report) -> None:
    logs = sorted(p.name for p in Path(report.logs).glob("*/logs/*.log"))
    assert logs == ["gateway.log", "inference.log", "registry.log"]
