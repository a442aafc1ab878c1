"""The peers comparison end to end, briefly: `maas bench`'s Runner starts inference,
a gateway in front of it and (where its venv is built) KServe, measures c=1 and c=16
for a fraction of a second each, and reports CPU per request for every hop and the
goals; the JSON it writes validates. Figures this short are not measurements."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tools.bench.peers import venv_python
from tools.bench.run import Plan, Runner, write
from tools.bench.stats import validate


def kserve_built() -> bool:
    try:
        venv_python("kserve")
    except FileNotFoundError:
        return False
    return True


@pytest.mark.timeout(300)
def test_peers_run_reports_cpu_per_hop_and_the_goals(tmp_path: Path) -> None:
    peers = ["kserve"] if kserve_built() else []
    plan = Plan(
        models=["digits"],
        targets=["inference", "gateway", *peers],
        concurrency=[1, 16],
        seconds=0.3,
        processes=1,
        out=tmp_path,
        name="peers",
    )
    said: list[str] = []
    document = Runner(plan, say=said.append).run()
    assert validate(document) == []
    by_target = {s["target"]: s for s in document["series"]}
    assert set(by_target) == {"inference", "gateway", *peers}
    for target, hops in (("inference", {"inference"}), ("gateway", {"gateway", "inference"})):
        for level in by_target[target]["levels"]:
            assert level["errors"] == 0 and level["completed"] > level["requests"] > 0
            assert set(level["cpu_us_per_request"]) == hops
            assert all(us > 0 for us in level["cpu_us_per_request"].values())
    for level in by_target.get("kserve", {"levels": []})["levels"]:
        assert set(level["cpu_us_per_request"]) == {"peer"}
    goals = {g["goal"]: g for g in document["goals"]}
    assert set(goals) == {1, 2}
    # With KServe measured every goal is judged met or missed; without, not measured.
    assert all((g["met"] is None) is (not peers) for g in goals.values())
    printed = "\n".join(said)
    assert "goal 1 (the whole stack beats the peers' single hop):" in printed
    assert "CPU µs/req: gateway | inference | peer" in printed
    json_path, _ = write(document, tmp_path, "peers")
    assert validate(json.loads(json_path.read_text())) == []


def test_gateway_flags_reach_the_gateway_it_starts(tmp_path: Path) -> None:
    # A flag the gateway refuses stops it; the run notes it instead of measuring.
    plan = Plan(
        models=["digits"],
        targets=["gateway"],
        concurrency=[1],
        seconds=0.2,
        processes=1,
        out=tmp_path,
        gateway_flags=["--no-such-flag-for-the-bench-test"],
    )
    document = Runner(plan, say=lambda _: None).run()
    assert document["series"] == []
    (note,) = document["notes"]
    assert note.startswith("gateway not measured: it did not start")
    assert "--no-such-flag-for-the-bench-test" in note
