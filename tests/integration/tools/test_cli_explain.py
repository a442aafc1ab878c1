"""`maas explain` on a tensor model (the digits path) through a real gateway in front
of a real inference server: the heatmap PNG is written at its size, and the class
explained is the one `maas infer` predicts; the API key comes from the flag. A text
model (the MiniLM demo) is explained token by token against a reference text."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from tests.integration.inference.embedding_models import repository_with
from tests.integration.tools.cli_stack import maas, serving
from tools import explain_cli
from tools.demo import minilm


def digit_png(path: Path, index: int) -> Path:
    """scikit-learn digit `index` as an 8x8 PNG, dark ink on white (as scanned)."""
    pixels = load_digits().images[index]
    grey = np.round(255.0 - pixels / 16.0 * 255.0).astype(np.uint8)
    Image.fromarray(grey, mode="L").save(path)
    return path


async def test_the_heatmap_is_written_for_the_class_maas_infer_predicts(
    make_repository: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MAAS_API_KEY", raising=False)
    png = digit_png(tmp_path / "digit.png", 7)
    out_png = tmp_path / "explain.png"
    async with serving(make_repository("cnn"), api_keys="team:the-key") as address:
        infer = ["infer", "cnn", "--input", str(png), "--url", address, "--api-key", "the-key"]
        code, out, err = await maas(capsys, infer)
        assert code == 0, err
        predicted = re.search(r"class (\d+) \(p=", out)
        assert predicted is not None, out
        args = ["explain", "cnn", "--input", str(png), "--png", str(out_png), "--url", address]
        code, _, err = await maas(capsys, args)
        assert code == 2 and err.startswith("maas explain: UNAUTHENTICATED: "), err
        code, out, err = await maas(capsys, [*args, "--patch-size", "2", "--api-key", "the-key"])
    assert code == 0, err
    assert f"output probabilities, class {predicted.group(1)}\n" in out, out
    for figure in ("output_value", "base_value", "error_estimate", "evaluations"):
        assert re.search(rf"^{figure} \S+$", out, re.MULTILINE), out
    with Image.open(out_png) as picture:
        picture.verify()
    with Image.open(out_png) as picture:
        width, height = explain_cli.FIGSIZE
        assert picture.format == "PNG"
        assert picture.size == (round(width * explain_cli.DPI), round(height * explain_cli.DPI))


async def test_a_tensor_model_needs_an_input_file(
    make_repository: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    async with serving(make_repository("cnn")) as address:
        code, _, err = await maas(capsys, ["explain", "cnn", "--text", "hi", "--url", address])
    assert code == 2
    assert err.strip() == "maas explain: model 'cnn' takes a tensor 'input': give --input FILE"


async def test_a_text_model_is_explained_token_by_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_png = tmp_path / "tokens.png"
    repository = repository_with(tmp_path / "repository", minilm.CONFIG)
    async with serving(repository) as address:
        args = ["explain", "minilm", "--text", "The cat sat on the mat", "--url", address]
        code, _, err = await maas(capsys, args)
        assert code == 2, err
        assert err.startswith("maas explain: INVALID_ARGUMENT: parameters.reference_text"), err
        code, out, err = await maas(capsys, [*args, "--reference", "a cat", "--png", str(out_png)])
    assert code == 0, err
    assert "method tokens" in out and "output embedding, similarity to 'a cat'\n" in out, out
    rows = re.findall(r"^  ([+-]\d+\.\d+)  (\S+)$", out, re.MULTILINE)
    assert [token for _, token in rows] == ["the", "cat", "sat", "on", "the", "mat"], out
    assert max(rows, key=lambda row: float(row[0]))[1] == "cat", out
    with Image.open(out_png) as picture:
        width, height = explain_cli.FIGSIZE
        assert picture.size == (round(width * explain_cli.DPI), round(height * explain_cli.DPI))
