"""`maas infer` on a tensor model (the digits path), through a real gateway and
inference service."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from tests.integration.tools.cli_stack import maas, serving


async def test_a_tensor_model_prints_its_predicted_class(
    make_repository: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repository = make_repository("cnn")
    image = np.random.default_rng(3).uniform(0, 16, (1, 8, 8)).astype(np.float32)
    np.save(tmp_path / "digit.npy", image)
    session = ort.InferenceSession(str(repository / "cnn" / "1" / "model.onnx"))
    expected = int(session.run(None, {"input": image[None]})[0].argmax())
    async with serving(repository) as gateway:
        args = ["infer", "cnn", "--input", str(tmp_path / "digit.npy"), "--url", gateway]
        code, out, err = await maas(capsys, args)
        assert code == 0, err
        assert f"class {expected} (p=" in out, out
        code, out, err = await maas(capsys, ["infer", "cnn", "--text", "hi", "--url", gateway])
    assert code == 2
    assert err.strip() == "maas infer: model 'cnn' takes a tensor 'input': give --input FILE"
