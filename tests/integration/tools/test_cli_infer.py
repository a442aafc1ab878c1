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


async def test_the_api_key_comes_from_the_flag_or_the_environment(
    make_repository: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    np.save(tmp_path / "digit.npy", np.zeros((1, 8, 8), np.float32))
    monkeypatch.delenv("MAAS_API_KEY", raising=False)
    async with serving(make_repository("cnn"), api_keys="team:the-key") as gateway:
        args = ["infer", "cnn", "--input", str(tmp_path / "digit.npy"), "--url", gateway]
        code, _, err = await maas(capsys, args)
        assert code == 2 and err.startswith("maas infer: UNAUTHENTICATED: "), err
        code, out, err = await maas(capsys, [*args, "--api-key", "the-key"])
        assert code == 0 and "class " in out, err
        monkeypatch.setenv("MAAS_API_KEY", "the-key")
        code, out, err = await maas(capsys, args)
    assert code == 0 and "class " in out, err
