"""tools/gpu_smoke end to end with --quick: every section runs or says why it skipped,
the service path (a real inference service, merged batches, two instances) gives CPU
ORT's outputs, and require_cuda refuses where there is no CUDA. On a CPU machine the
CUDA sections are skipped with "no CUDA"; none may fail."""

from __future__ import annotations

import json
from pathlib import Path

import onnxruntime as ort

from tools.gpu_smoke.__main__ import main

CUDA = "CUDAExecutionProvider" in ort.get_available_providers()


def test_quick_smoke_run_writes_one_report(tmp_path: Path) -> None:
    out = tmp_path / "smoke"
    assert main(["--quick", "--out", str(out)]) == 0
    report = json.loads((out / "gpu_smoke.json").read_text())
    assert (out / "gpu_smoke.log").read_text().count("== ") == 7
    sections = {s["name"].split()[0]: s for s in report["sections"]}
    assert list(sections) == [str(i) for i in range(1, 8)]
    assert report["summary"]["failed"] == 0
    assert sections["1"]["status"] == "ok"
    assert sections["1"]["data"]["onnxruntime"] == ort.__version__
    served = sections["4"]["data"]
    assert served["executions"] < 24 <= served["rows"]  # requests merged
    refusals = sections["5"]["data"]
    assert all(value["as_expected"] for value in refusals.values())
    if not CUDA:
        for key in ("2", "3", "4", "5", "6", "7"):
            assert sections[key]["status"] == "skipped"
            assert "no CUDA" in sections[key]["reason"]
        assert served["max_abs_error"] < 1e-4
        assert not refusals["cuda_required"]["loaded"]
        assert "required" in refusals["cuda_required"]["reason"]
