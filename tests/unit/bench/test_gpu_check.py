"""`python -m tools.gpu_check` on a machine without a GPU: a clear message, status 0."""

from __future__ import annotations

import onnxruntime as ort
import pytest

from tools import gpu_check


@pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(), reason="this machine has CUDA"
)
def test_without_cuda_it_says_so_and_exits_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    assert gpu_check.main([]) == 0
    out = capsys.readouterr().out
    assert "no GPU" in out and "onnxruntime-gpu" in out
