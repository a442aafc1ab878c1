"""tools.export: real torch exports checked with onnx and ONNX Runtime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, numpy_helper

from tests.unit.tools.export_factories import (
    AddSub,
    ExportDiverges,
    Invert,
    Scale,
    SmallCnn,
    SumOverBatch,
)
from tools.export import ExportError, check_parity, export_module


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _dims(value: onnx.ValueInfoProto) -> list[str | int]:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def _cnn() -> SmallCnn:
    torch.manual_seed(0)
    module = SmallCnn()
    # Non-trivial batch-norm statistics, so that folding them into the conv matters.
    module.norm.running_mean = torch.empty(8).uniform_(-0.5, 0.5)
    module.norm.running_var = torch.empty(8).uniform_(0.5, 2.0)
    return module.eval()


@pytest.fixture(scope="module")
def cnn_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[SmallCnn, Path]:
    """One CNN export shared by the tests that only read it."""
    module = _cnn()
    path = tmp_path_factory.mktemp("cnn") / "cnn.onnx"
    labels = [f"class-{i}" for i in range(10)]
    export_module(
        module,
        (torch.randn(2, 1, 8, 8),),
        path,
        input_names=["input"],
        output_names=["probabilities"],
        class_labels=labels,
    )
    return module, path


def test_cnn_parity_and_dynamic_batch(cnn_model: tuple[SmallCnn, Path], tmp_path: Path) -> None:
    module, path = cnn_model
    model = onnx.load(str(path))
    assert model.opset_import[0].version == 17
    assert _dims(model.graph.input[0]) == ["batch", 1, 8, 8]
    assert _dims(model.graph.output[0]) == ["batch", 10]
    session = _session(path)
    for batch in (1, 7):
        x = torch.randn(batch, 1, 8, 8)
        (got,) = session.run(None, {"input": x.numpy()})
        assert got.shape == (batch, 10)
        np.testing.assert_allclose(got, module(x).detach().numpy(), atol=1e-5, rtol=1e-4)


def test_export_result_reports_parity(tmp_path: Path) -> None:
    result = export_module(
        _cnn(),
        (torch.randn(2, 1, 8, 8),),
        tmp_path / "m.onnx",
        input_names=["input"],
        output_names=["probabilities"],
    )
    assert result.path == tmp_path / "m.onnx" and result.path.is_file()
    assert (result.opset, result.input_names, result.output_names) == (
        17,
        ["input"],
        ["probabilities"],
    )
    assert result.parity is not None and result.parity.passed
    assert 0 <= result.parity.max_abs_error < 1e-5
    assert 0 <= result.parity.max_rel_error < 1e-3
    assert not list(tmp_path.glob(".export-*")), "the staging directory was left behind"


def test_two_inputs_two_outputs(tmp_path: Path) -> None:
    path = tmp_path / "addsub.onnx"
    x = torch.ones(2, 4)
    result = export_module(
        AddSub(), (x, x), path, input_names=["a", "b"], output_names=["sum", "diff"]
    )
    assert result.parity is not None and result.parity.max_abs_error == 0.0
    model = onnx.load(str(path))
    assert [v.name for v in model.graph.input] == ["a", "b"]
    assert [v.name for v in model.graph.output] == ["sum", "diff"]
    a, b = np.random.rand(7, 4).astype(np.float32), np.random.rand(7, 4).astype(np.float32)
    total, diff = _session(path).run(["sum", "diff"], {"a": a, "b": b})
    np.testing.assert_array_equal(total, a + b)
    np.testing.assert_array_equal(diff, a - b)


def test_corrupted_initializer_fails_parity(
    cnn_model: tuple[SmallCnn, Path], tmp_path: Path
) -> None:
    module, path = cnn_model
    model = onnx.load(str(path))
    largest = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    weights = numpy_helper.to_array(largest)
    # Noise, not a constant shift: softmax would cancel a shift of every class score.
    noise = np.random.default_rng(0).normal(0, 0.05, weights.shape).astype(weights.dtype)
    largest.CopyFrom(numpy_helper.from_array(weights + noise, largest.name))
    broken = tmp_path / "broken.onnx"
    onnx.save(model, str(broken))

    inputs = (torch.randn(5, 1, 8, 8),)
    assert check_parity(module, path, inputs, atol=1e-4, rtol=1e-3).passed
    with pytest.raises(ExportError, match="parity check failed") as caught:
        check_parity(module, broken, inputs, atol=1e-4, rtol=1e-3)
    report = caught.value.report
    assert report is not None and not report.passed
    assert report.max_abs_error > 1e-3


def test_trace_that_differs_from_eager_is_caught(tmp_path: Path) -> None:
    path = tmp_path / "diverges.onnx"
    with pytest.raises(ExportError, match="parity check failed") as caught:
        export_module(
            ExportDiverges(), (torch.ones(2, 3),), path, input_names=["x"], output_names=["y"]
        )
    report = caught.value.report
    assert report is not None and report.max_abs_error > 0.1
    assert not path.exists(), "a model that failed its checks must not be installed"
    assert not list(tmp_path.iterdir()), "nor anything else"


def test_output_without_batch_dimension_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="dynamic_batch=False"):
        export_module(
            SumOverBatch(),
            (torch.ones(2, 3),),
            tmp_path / "s.onnx",
            input_names=["x"],
            output_names=["y"],
        )
    result = export_module(
        SumOverBatch(),
        (torch.ones(2, 3),),
        tmp_path / "s.onnx",
        input_names=["x"],
        output_names=["y"],
        dynamic_batch=False,
    )
    assert _dims(onnx.load(str(result.path)).graph.input[0]) == [2, 3]


def test_external_data_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = torch.nn.Linear(64, 32).eval()
    path = tmp_path / "linear.onnx"
    export_module(
        module,
        (torch.randn(2, 64),),
        path,
        input_names=["x"],
        output_names=["y"],
        external_data=True,
    )
    data = tmp_path / "linear.onnx.data"
    assert data.is_file() and data.stat().st_size >= 64 * 32 * 4
    assert path.stat().st_size < 64 * 32 * 4, "the weights must not be inside the model file"
    x = torch.randn(7, 64)
    (got,) = _session(path).run(None, {"x": x.numpy()})
    np.testing.assert_allclose(got, module(x).detach().numpy(), atol=1e-5)

    # Exporting into one file again must not leave the stale weights behind.
    export_module(module, (torch.randn(2, 64),), path, input_names=["x"], output_names=["y"])
    assert not data.exists()
    (got,) = _session(path).run(None, {"x": x.numpy()})
    np.testing.assert_allclose(got, module(x).detach().numpy(), atol=1e-5)


def test_fp16_inputs_and_outputs(tmp_path: Path) -> None:
    module = _cnn()
    path = tmp_path / "half.onnx"
    result = export_module(
        module,
        (torch.randn(2, 1, 8, 8),),
        path,
        input_names=["input"],
        output_names=["probabilities"],
        fp16=True,
    )
    model = onnx.load(str(path))
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    assert all(t.data_type != TensorProto.FLOAT for t in model.graph.initializer)
    assert result.parity is not None and result.parity.max_abs_error < 1e-2
    x = torch.randn(3, 1, 8, 8)
    (got,) = _session(path).run(None, {"input": x.half().numpy()})
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float32), module(x).detach().numpy(), atol=1e-2)


def test_metadata_names_and_labels(cnn_model: tuple[SmallCnn, Path]) -> None:
    _, path = cnn_model
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(props["maas.input_names"]) == ["input"]
    assert json.loads(props["maas.output_names"]) == ["probabilities"]
    assert json.loads(props["maas.class_labels"]) == [f"class-{i}" for i in range(10)]
    assert props["maas.exporter"].startswith("torch ")
    meta = _session(path).get_modelmeta().custom_metadata_map
    assert json.loads(meta["maas.class_labels"])[3] == "class-3"


def test_wrong_number_of_class_labels(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="3 class labels"):
        export_module(
            _cnn(),
            (torch.randn(2, 1, 8, 8),),
            tmp_path / "m.onnx",
            input_names=["input"],
            output_names=["p"],
            class_labels=["a", "b", "c"],
        )


def test_named_dynamic_axes(tmp_path: Path) -> None:
    module = torch.nn.Linear(4, 2).eval()
    path = tmp_path / "seq.onnx"
    export_module(
        module,
        (torch.randn(2, 5, 4),),
        path,
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {1: "seq-len"}, "y": {1: "seq-len"}},
    )
    model = onnx.load(str(path))
    assert _dims(model.graph.input[0]) == ["batch", "seq-len", 4]
    assert _dims(model.graph.output[0]) == ["batch", "seq-len", 2]
    (got,) = _session(path).run(None, {"x": np.ones((3, 11, 4), np.float32)})
    assert got.shape == (3, 11, 2)


@pytest.mark.parametrize("opset", [13, 20])
def test_other_opsets(tmp_path: Path, opset: int) -> None:
    result = export_module(
        _cnn(),
        (torch.randn(2, 1, 8, 8),),
        tmp_path / "m.onnx",
        input_names=["input"],
        output_names=["p"],
        opset=opset,
    )
    model = onnx.load(str(result.path))
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [opset]
    assert result.parity is not None and result.parity.passed


def test_torchscript_module(tmp_path: Path) -> None:
    scripted = torch.jit.script(_cnn())
    result = export_module(
        scripted,
        (torch.randn(2, 1, 8, 8),),
        tmp_path / "m.onnx",
        input_names=["input"],
        output_names=["p"],
    )
    assert result.parity is not None and result.parity.passed
    assert _dims(onnx.load(str(result.path)).graph.input[0])[0] == "batch"


# Every dtype the serving protocol carries that torch can export: x * 2 (bool: not x).
DTYPES = [
    torch.float16,
    torch.float32,
    torch.float64,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.uint8,
    torch.uint16,
    torch.uint32,
    torch.uint64,
    torch.bool,
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_every_dtype(tmp_path: Path, dtype: torch.dtype) -> None:
    module = Invert() if dtype == torch.bool else Scale()
    path = tmp_path / "m.onnx"
    example = torch.zeros(2, 3, dtype=dtype)
    result = export_module(module, (example,), path, input_names=["x"], output_names=["y"])
    assert result.parity is not None and result.parity.max_abs_error == 0.0
    x = torch.arange(21).reshape(7, 3).to(dtype)
    (got,) = _session(path).run(None, {"x": x.numpy()})
    assert got.dtype == x.numpy().dtype
    np.testing.assert_array_equal(got, module(x).numpy())


def test_bad_names_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="2 input names"):
        export_module(
            Scale(),
            (torch.ones(2, 3),),
            tmp_path / "m.onnx",
            input_names=["x", "extra"],
            output_names=["y"],
        )
    with pytest.raises(ExportError, match="expected \\['sum'\\]"):
        export_module(
            AddSub(),
            (torch.ones(2, 3), torch.ones(2, 3)),
            tmp_path / "m.onnx",
            input_names=["a", "b"],
            output_names=["sum"],
        )
