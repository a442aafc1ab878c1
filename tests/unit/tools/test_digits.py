"""tools.digits: the demo model trains, exports, and serves the same answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tools.digits import CLASS_LABELS, DigitsResult, train_and_export


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> DigitsResult:
    """One trained and exported model for every test here (training takes seconds)."""
    return train_and_export(tmp_path_factory.mktemp("digits") / "1" / "model.onnx")


def test_held_out_accuracy(digits: DigitsResult) -> None:
    assert digits.accuracy >= 0.9
    assert digits.holdout_size == 360 and digits.train_size == 1437
    assert digits.train_seconds > 0  # recorded; its speed is no test's to assert
    assert digits.export.parity is not None and digits.export.parity.passed


def test_holdout_file(digits: DigitsResult) -> None:
    assert digits.holdout_path == digits.path.with_name("digits_holdout.npz")
    with np.load(digits.holdout_path) as data:
        images, labels = data["images"], data["labels"]
    assert images.dtype == np.float32 and images.shape == (360, 1, 8, 8)
    assert labels.dtype == np.int64 and labels.shape == (360,)
    assert images.min() == 0 and images.max() == 16, "raw load_digits pixels, not normalised"
    assert sorted(set(labels.tolist())) == list(range(10))


def test_onnx_model_matches_reported_accuracy(digits: DigitsResult) -> None:
    with np.load(digits.holdout_path) as data:
        images, labels = data["images"], data["labels"]
    session = ort.InferenceSession(str(digits.path), providers=["CPUExecutionProvider"])
    (probabilities,) = session.run(["probabilities"], {"input": images})
    assert probabilities.shape == (360, 10) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    onnx_accuracy = float((probabilities.argmax(axis=1) == labels).mean())
    assert onnx_accuracy == pytest.approx(digits.accuracy, abs=1 / 360)
    (one,) = session.run(None, {"input": images[:1]})
    np.testing.assert_allclose(one, probabilities[:1], atol=1e-6)


def test_model_interface(digits: DigitsResult) -> None:
    model = onnx.load(str(digits.path))
    (inp,), (out,) = model.graph.input, model.graph.output
    shape = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert (inp.name, shape) == ("input", ["batch", 1, 8, 8])
    assert out.name == "probabilities"
    props = {p.key: p.value for p in model.metadata_props}
    assert (
        json.loads(props["maas.class_labels"]) == list(CLASS_LABELS) == [str(d) for d in range(10)]
    )


def test_training_is_deterministic(digits: DigitsResult, tmp_path: Path) -> None:
    again = train_and_export(tmp_path / "model.onnx")
    assert again.accuracy == digits.accuracy
