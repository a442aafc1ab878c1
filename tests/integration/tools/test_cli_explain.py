"""`maas explain` on a tensor model (the digits path) against a real inference
server, which serves maas.explain.v1.Explainer beside inference: the heatmap PNG is
written at its size, and the class explained is the one `maas infer` predicts."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from services.inference.main import InferenceServer
from services.inference.settings import InferenceSettings
from tests.integration.tools.cli_stack import maas
from tools import explain_cli


@contextlib.asynccontextmanager
async def inference(repository: Path) -> AsyncIterator[str]:
    server = InferenceServer(
        InferenceSettings(
            port=0,
            metrics_port=0,
            host="localhost",
            model_repository=str(repository),
            grace_seconds=0,
        )
    )
    await server.start()
    try:
        yield f"localhost:{server.grpc.port}"
    finally:
        await server.shutdown(0)


def digit_png(path: Path, index: int) -> Path:
    """scikit-learn digit `index` as an 8x8 PNG, dark ink on white (as scanned)."""
    pixels = load_digits().images[index]
    grey = np.round(255.0 - pixels / 16.0 * 255.0).astype(np.uint8)
    Image.fromarray(grey, mode="L").save(path)
    return path


async def test_the_heatmap_is_written_for_the_class_maas_infer_predicts(
    make_repository: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = digit_png(tmp_path / "digit.png", 7)
    out_png = tmp_path / "explain.png"
    async with inference(make_repository("cnn")) as address:
        code, out, err = await maas(capsys, ["infer", "cnn", "--input", str(png), "--url", address])
        assert code == 0, err
        predicted = re.search(r"class (\d+) \(p=", out)
        assert predicted is not None, out
        args = ["explain", "cnn", "--input", str(png), "--png", str(out_png), "--url", address]
        code, out, err = await maas(capsys, [*args, "--patch-size", "2"])
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
    async with inference(make_repository("cnn")) as address:
        code, _, err = await maas(capsys, ["explain", "cnn", "--text", "hi", "--url", address])
    assert code == 2
    assert err.strip() == "maas explain: model 'cnn' takes a tensor 'input': give --input FILE"
