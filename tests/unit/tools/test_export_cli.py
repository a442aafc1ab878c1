"""`maas export`: the command line over tools.export, run in-process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from tests.unit.tools.export_factories import mlp
from tools.cli import main

FACTORIES = "tests.unit.tools.export_factories"


def _run(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def test_factory_export_writes_model_and_prints_parity(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\nbird\n")
    out = tmp_path / "mlp.onnx"
    argv = ["export", f"{FACTORIES}:mlp", "--input-shape", "x=2,4"]
    assert main([*argv, "--class-labels", str(labels), "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert "exporting" in captured.err
    assert "parity at batch 3: max abs" in captured.err
    assert f"wrote {out}" in captured.out
    model = onnx.load(str(out))
    assert [v.name for v in model.graph.output] == ["output"]
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["maas.class_labels"]) == ["cat", "dog", "bird"]
    x = np.random.default_rng(0).standard_normal((7, 4)).astype(np.float32)
    (got,) = _run(out, {"x": x})
    np.testing.assert_allclose(got, mlp()(torch.from_numpy(x)).detach().numpy(), atol=1e-5)


def test_weights_are_loaded(tmp_path: Path) -> None:
    trained = mlp()
    with torch.no_grad():
        for parameter in trained.parameters():
            parameter.mul_(-3.0)
    weights = tmp_path / "weights.pt"
    torch.save(trained.state_dict(), weights)
    out = tmp_path / "mlp.onnx"
    argv = ["export", f"{FACTORIES}:mlp", "--weights", str(weights), "--input-shape", "x=2,4"]
    assert main([*argv, "-o", str(out)]) == 0
    x = np.ones((2, 4), np.float32)
    (got,) = _run(out, {"x": x})
    np.testing.assert_allclose(got, trained(torch.from_numpy(x)).detach().numpy(), atol=1e-5)


def test_dtypes_names_and_dynamic_axes(tmp_path: Path) -> None:
    out = tmp_path / "embed.onnx"
    argv = [
        "export", f"{FACTORIES}:token_embedding", "--input-shape", "ids=2,5",
        "--input-dtype", "ids=int64", "--output-names", "vectors",
        "--dynamic-axis", "ids:1:sequence", "--dynamic-axis", "vectors:1:sequence",
        "--opset", "18", "-o", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    model = onnx.load(str(out))
    assert model.opset_import[0].version == 18
    dims = [d.dim_param or d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    assert (model.graph.output[0].name, dims) == ("vectors", ["batch", "sequence", 4])
    (got,) = _run(out, {"ids": np.zeros((3, 9), np.int64)})
    assert got.shape == (3, 9, 4)


def test_torchscript_file(tmp_path: Path) -> None:
    scripted = tmp_path / "mlp.pt"
    torch.jit.save(torch.jit.script(mlp()), str(scripted))
    out = tmp_path / "mlp.onnx"
    argv = ["export", "--torchscript", str(scripted), "--input-shape", "x=2,4"]
    assert main([*argv, "--external-data", "-o", str(out)]) == 0
    assert out.with_name("mlp.onnx.data").exists() is False  # every weight is under 1 KiB
    assert _run(out, {"x": np.ones((5, 4), np.float32)})[0].shape == (5, 3)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([f"{FACTORIES}:missing"], "cannot import"),
        (["no_colon"], "expected MODULE:FACTORY"),
        ([], "exactly one of"),
        ([f"{FACTORIES}:mlp", "--input-dtype", "x=complex7"], "unknown dtype 'complex7'"),
        ([f"{FACTORIES}:mlp", "--dynamic-axis", "x:one:n"], "NAME:DIM:LABEL"),
        ([f"{FACTORIES}:mlp", "--alias", "prod"], "--alias needs --register"),
    ],
)
def test_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    out = tmp_path / "m.onnx"
    assert main(["export", *args, "--input-shape", "x=2,4", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("maas export: ") and message in err
    assert "Traceback" not in err
    assert not out.exists()


def test_failed_export_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["export", f"{FACTORIES}:mlp", "--input-shape", "x=2,5", "--output-names", "y"]
    assert main([*argv, "-o", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert "maas export: torch could not export the module" in err
    assert "Traceback" not in err


def test_register_reaches_the_registry_client(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m.onnx"
    argv = ["export", f"{FACTORIES}:mlp", "--input-shape", "x=2,4", "-o", str(out)]
    # Port 1 refuses connections at once: the upload fails after a complete export.
    assert main([*argv, "--register", "mlp", "--registry", "127.0.0.1:1"]) == 2
    captured = capsys.readouterr()
    assert f"wrote {out}" in captured.out
    assert captured.err.splitlines()[-1].startswith("maas export: ")
    assert "Traceback" not in captured.err
