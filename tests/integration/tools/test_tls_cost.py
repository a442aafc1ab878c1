"""The TLS-cost bench through real servers: a plaintext and a TLS gateway (a local CA's
certificate) in front of one inference service both answer its closed-loop clients."""

from __future__ import annotations

import json
from pathlib import Path

from tools.bench import tls_cost


def test_both_gateways_answer_at_each_level(tmp_path: Path) -> None:
    out = tmp_path / "tls.json"
    args = ["--concurrency", "1,4", "--seconds", "0.5", "--rounds", "1", "--out", str(out)]
    assert tls_cost.main(args) == 0
    written = json.loads(out.read_text())
    assert written["perf_analyzer"] is None
    results = written["ours"]
    assert set(results) == {"1", "4"}
    for by_label in results.values():
        assert set(by_label) == {"plaintext", "tls"}
        assert all(run["rps"] > 0 for runs in by_label.values() for run in runs)
