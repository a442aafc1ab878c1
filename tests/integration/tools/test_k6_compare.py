"""The three-generator bench (tools/bench/k6_compare.py) through real servers: ours and k6
both drive digits direct and through the gateway, and the docs table comes from the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tools.bench import k6, k6_compare

pytestmark = pytest.mark.skipif(k6.binary() is None, reason="the k6 binary is not installed")


def test_ours_and_k6_measure_both_targets(tmp_path: Path) -> None:
    out = tmp_path / "k6.json"
    args = ["--concurrency", "2", "--seconds", "0.5", "--rounds", "1"]
    assert k6_compare.main([*args, "--generators", "ours,k6", "--out", str(out)]) == 0
    document = json.loads(out.read_text())
    # k6 itself may crash (a Go panic, seen once in CI); it is then run again and the note
    # says so. Any other note is a failure.
    assert [n for n in document["notes"] if k6.CRASH_NOTE not in n] == []
    assert set(document["results"]) == {"direct c=2", "gateway c=2"}
    for key, runs in document["results"].items():
        assert set(runs) == {"ours", "k6"}, key
        for generator, (row,) in runs.items():
            assert row["rps"] > 0 and row["errors"] == 0, (key, generator)
            # Through the gateway both hops are counted.
            hops = {"inference", "gateway"} if key.startswith("gateway") else {"inference"}
            assert set(row["cpu_us_per_request"]) == hops, (key, generator)
    table = k6_compare.table(document)
    assert "| gateway | 2 | k6 |" in table and "| direct | 2 | ours | " in table


def test_an_unknown_generator_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        k6_compare.main(["--generators", "ours,wrk"])
    assert "wrk" in capsys.readouterr().err
