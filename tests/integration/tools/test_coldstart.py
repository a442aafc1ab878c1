"""The cold-start bench on the smallest large demo: a fresh replica with an empty cache
downloads the multi-file version from a real registry and answers; a second one answers
from the cache it left (both subprocesses on port 0)."""

from __future__ import annotations

import json
from pathlib import Path

from tools.bench import coldstart


def test_cold_and_warm_replicas_answer(tmp_path: Path) -> None:
    out = tmp_path / "coldstart.json"
    assert coldstart.main(["--model", "efficientnet", "--timeout", "240", "--out", str(out)]) == 0
    figures = json.loads(out.read_text())["efficientnet"]
    assert figures["size_mib"] > 10
    assert figures["cold_first_answer_s"] > 0 and figures["warm_first_answer_s"] > 0
