"""Issue G's goals and the CPU per request: the arithmetic, the goal checks on made-up
levels (met, missed, not measured), the results JSON's new fields, py-spy's samples
summed, and a process tree's CPU with psutil."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tools.bench.cpu import hops_cpu_seconds, spent, tree_cpu_seconds
from tools.bench.profile import summarize as summarize_profile
from tools.bench.stats import Level, Series, cpu_per_request_us, results_document, validate
from tools.bench.summary import goals, goals_json, goals_text, markdown


def level(c: int, rate: float, **cpu: float) -> Level:
    lat = {"p50": 1.0, "p90": 1.5, "p99": 2.0, "mean": 1.0}
    return Level(c, 100, 0, 1.0, rate, rate, lat, cpu_us_per_request=dict(cpu))


def stack(
    direct: tuple[float, float],
    gateway: tuple[float, float],
    kserve: tuple[float, float],
    cpu: tuple[float, float, float, float],
) -> list[Series]:
    """Rates at c=1 and c=16 of each target, and CPU µs per request at c=16:
    (gateway hop, inference hop behind it, inference direct, KServe)."""
    gw_us, behind_us, direct_us, kserve_us = cpu
    return [
        Series(
            "inference",
            "inference",
            "digits",
            batching=True,
            levels=[level(1, direct[0]), level(16, direct[1], inference=direct_us)],
        ),
        Series(
            "gateway",
            "gateway",
            "digits",
            batching=True,
            levels=[
                level(1, gateway[0]),
                level(16, gateway[1], gateway=gw_us, inference=behind_us),
            ],
        ),
        Series(
            "kserve",
            "kserve",
            "digits",
            levels=[level(1, kserve[0]), level(16, kserve[1], peer=kserve_us)],
        ),
    ]


def test_cpu_per_request_divides_each_hops_seconds_by_the_requests() -> None:
    assert cpu_per_request_us({"gateway": 0.5, "inference": 0.25}, 1000) == {
        "gateway": 500.0,
        "inference": 250.0,
    }
    assert cpu_per_request_us({"peer": 1.0}, 3) == {"peer": 333333.3}
    assert cpu_per_request_us({"peer": 1.0}, 0) == {}
    assert spent({"a": 1.0, "b": 2.0}, {"a": 1.5, "b": 2.0, "c": 9.0}) == {"a": 0.5, "b": 0.0}


def test_goals_met_when_every_ratio_reaches_its_target() -> None:
    # gateway/KServe 1.0 at c=16 and 0.8 at c=1; direct 1.5x at both; CPU 0.6x and 0.4x.
    series = stack((1500, 3000), (800, 2000), (1000, 2000), (300, 300, 400, 1000))
    first, second = goals(series)
    assert first.met is True and second.met is True
    values = {c.name: c.value for c in first.checks + second.checks}
    assert values["gateway / KServe req/s, digits, c=16"] == 1.0
    assert values["gateway / KServe req/s, digits, c=1"] == 0.8
    assert values["inference direct / KServe req/s, digits, c=1"] == 1.5
    assert values["gateway + inference / KServe CPU per request, digits, c=16"] == 0.6
    assert values["inference alone (direct) / KServe CPU per request, digits, c=16"] == 0.4


def test_one_ratio_short_misses_its_goal_and_says_which() -> None:
    # As above, but the gateway at c=1 reaches 0.79x and the two hops cost 0.61x.
    series = stack((1500, 3000), (790, 2000), (1000, 2000), (310, 300, 400, 1000))
    first, second = goals(series)
    assert first.met is False and second.met is False
    missed = [c.name for g in (first, second) for c in g.checks if c.met is False]
    assert missed == [
        "gateway / KServe req/s, digits, c=1",
        "gateway + inference / KServe CPU per request, digits, c=16",
    ]
    text = goals_text([first, second])
    assert "goal 1 (the whole stack beats the peers' single hop): missed" in text
    assert "gateway / KServe req/s, digits, c=1: 0.79x (target >= 0.8x) missed" in text
    assert "gateway 310 + inference 300 = 610 µs against KServe's 1000 µs" in text


def test_without_kserve_the_goals_are_not_measured_rather_than_met() -> None:
    series = stack((1500, 3000), (800, 2000), (1000, 2000), (300, 300, 400, 1000))[:2]
    reached = goals(series)
    assert [g.met for g in reached] == [None, None]
    assert "goal 2 (server CPU per request): not measured" in goals_text(reached)


def test_results_json_carries_the_goals_and_the_cpu_per_hop() -> None:
    series = stack((1500, 3000), (800, 2000), (1000, 2000), (300, 300, 400, 1000))
    document = results_document(series, {}, {}, goals=goals_json(goals(series)))
    assert validate(document) == []
    assert [g["met"] for g in document["goals"]] == [True, True]
    assert document["series"][1]["levels"][1]["cpu_us_per_request"] == {
        "gateway": 300,
        "inference": 300,
    }
    document["series"][0]["levels"][1]["cpu_us_per_request"] = {"inference": -1}
    document["goals"][0]["met"] = "yes"
    problems = validate(document)
    assert any("series 0 level 1: cpu_us_per_request" in p for p in problems)
    assert any("goal 0: met must be" in p for p in problems)


def test_the_table_shows_cpu_per_request_for_each_hop() -> None:
    series = stack((1500, 3000), (800, 2000), (1000, 2000), (300, 250, 400, 1000))
    table = markdown(series, [])
    assert "CPU µs/req: gateway | inference | peer |" in table
    assert "| digits | gateway | 16 | 2000.0 |" in table
    assert table.splitlines()[5].endswith("| 300 | 250 | - |")


def test_py_spy_samples_sum_into_frames_and_kinds() -> None:
    raw = textwrap.dedent(
        """\
        MainThread (1);run (asyncio/base_events.py:600);_run_once (asyncio/base_events.py:1900) 50
        MainThread (1);_handle_rpc (grpc/_cython/_cygrpc/aio/server.pyx.pxi:700) 30
        MainThread (1);_handle_rpc (grpc/_cython/_cygrpc/aio/server.pyx.pxi:710) 10
        Thread-1 (2);_run (services/inference/runtime.py:40);run (onnxruntime/capi/x.py:220) 10
        MainThread (1);select (selectors.py:468);epoll_wait (libc.so.6) 60
        Thread-1 (2);_main (services/inference/instances.py:9);_queue_SimpleQueue_get (_q.c.h) 40
        not a sample line
        """
    )
    found = summarize_profile(raw)
    assert found.samples == 200 and found.waiting == 0.5  # blocked threads set apart
    assert found.top_self[0] == ("_run_once (asyncio/base_events.py)", 0.5)
    assert ("_handle_rpc (grpc/_cython/_cygrpc/aio/server.pyx.pxi)", 0.4) in found.top_self
    assert found.kinds == {"event loop": 0.5, "grpc aio machinery": 0.4, "ORT run": 0.1}


def test_a_syscall_is_named_with_its_caller_and_kinded_by_it() -> None:
    raw = (
        "MainThread (1);0x7f01 (grpc/_cython/cygrpc.cpython-311-x86_64-linux-gnu.so);"
        "sendmsg (libc.so.6) 3\n"
        "MainThread (1);ParseFromString (google/protobuf/message.py:1);0x7f02 (libc.so.6) 1\n"
    )
    found = summarize_profile(raw)
    assert found.top_self[0] == ("sendmsg in [cygrpc.cpython-311-x86_64-linux-gnu.so]", 0.75)
    assert found.kinds == {"grpc aio machinery": 0.75, "protobuf parse/serialize": 0.25}


BURN = """
import subprocess, sys, time
if sys.argv[1] == "parent":
    child = subprocess.Popen([sys.executable, "-c", sys.argv[2], "child", sys.argv[2]])
    child.wait()
else:
    start = time.process_time()
    while time.process_time() - start < 0.3:
        pass
    print("burnt", flush=True)
    sys.stdin.read()
"""


def test_a_process_tree_counts_its_live_descendants() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", BURN, "parent", BURN],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None and parent.stdout.readline().strip() == "burnt"
        total = tree_cpu_seconds(parent.pid)
        assert total is not None and total >= 0.3
        hops = hops_cpu_seconds({"inference": [parent.pid]})
        assert hops is not None and hops["inference"] >= 0.3
    finally:
        assert parent.stdin is not None
        parent.stdin.close()  # the child reads EOF and exits, then the parent
        parent.wait(30)
    assert tree_cpu_seconds(parent.pid) is None
    assert hops_cpu_seconds({"inference": [parent.pid]}) is None


@pytest.mark.parametrize("gateway_c1", [800.0, 799.0])
def test_the_gateway_at_c1_is_judged_at_exactly_0_8(gateway_c1: float) -> None:
    series = stack((1500, 3000), (gateway_c1, 2000), (1000, 2000), (300, 300, 400, 1000))
    (first, _) = goals(series)
    assert first.met is (gateway_c1 >= 800)


def test_rounds_keep_the_median_round_whole() -> None:
    from tools.bench.run import _median

    rounds = [level(16, 900, peer=700), level(16, 1200, peer=500), level(16, 1000, peer=600)]
    assert _median(rounds) is rounds[2]
    assert _median(rounds[:2]) is rounds[0]  # of two, the slower
    assert _median(rounds[:1]) is rounds[0]
