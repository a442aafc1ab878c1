"""The explain app layer's pure parts: occlusion patches, background checks, targets,
parameters and method names."""

from __future__ import annotations

import numpy as np
import pytest

from services.common.errors import InvalidArgument
from services.inference.explain.background import check_background
from services.inference.explain.evaluate import resolve_target, target_values
from services.inference.explain.methods import METHODS, check_method
from services.inference.explain.occlusion import windows
from services.inference.explain.params import float_param, int_param


def _coverage(shape: tuple[int, ...], patch: int, stride: int) -> np.ndarray:
    covered = np.zeros(shape, dtype=int)
    for window in windows(shape, patch, stride):
        covered[window] += 1
    return covered


def test_patches_tile_an_image_across_its_channels() -> None:
    found = windows((3, 10, 10), 4, 4)
    assert len(found) == 9  # 3 x 3 patches, the last row and column clipped
    assert all(w[0] == slice(None) for w in found)
    assert (_coverage((3, 10, 10), 4, 4) == 1).all()


def test_channels_last_images_patch_height_and_width() -> None:
    found = windows((224, 224, 3), 8, 8)
    assert len(found) == 28 * 28
    assert all(w[2] == slice(None) for w in found)
    assert (_coverage((16, 16, 3), 8, 8) == 1).all()


def test_overlapping_patches_cover_every_element() -> None:
    assert (_coverage((7,), 3, 2) >= 1).all()
    assert len(windows((8, 8), 1, 1)) == 64
    assert windows((), 1, 1) == [()]


def test_background_must_match_the_example() -> None:
    example = {"a": np.zeros((1, 2, 3), np.float32), "b": np.zeros((1, 4), np.float32)}
    good = {"a": np.ones((5, 2, 3), np.float32), "b": np.ones((5, 4), np.float32)}
    assert check_background(good, example) == good
    cases = [
        ({**good, "a": np.ones((5, 3, 2), np.float32)}, "background 'a': shape [5, 3, 2]"),
        ({**good, "b": np.ones((4, 4), np.float32)}, "background 'b': 4 rows, expected 5"),
        ({"a": good["a"]}, "background: no rows for input 'b'"),
        ({**good, "c": good["b"]}, "background: unknown input 'c'"),
        ({**good, "b": np.ones((5, 4), np.float64)}, "datatype FP64, expected FP32"),
        ({**good, "a": np.ones((0, 2, 3), np.float32)}, "expected [-1, 2, 3]"),
    ]
    for arrays, message in cases:
        with pytest.raises(InvalidArgument, match=message.replace("[", r"\[")):
            check_background(arrays, example)


def test_target_defaults_to_the_largest_and_is_range_checked() -> None:
    row = np.array([[0.1, 0.7, 0.2]])
    assert resolve_target("p", row, None) == 1
    assert resolve_target("p", row, 2) == 2
    with pytest.raises(InvalidArgument, match=r"target: 3 is out of range .* expected 0\.\.2"):
        resolve_target("p", row, 3)
    outputs = {"p": np.arange(12, dtype=np.float32).reshape(2, 2, 3)}
    assert target_values(outputs, "p", 4).tolist() == [4.0, 10.0]


def test_parameters_are_typed_and_named() -> None:
    assert int_param({}, "patch_size", None) is None
    assert int_param({"patch_size": 3}, "patch_size", None, minimum=1) == 3
    assert float_param({"baseline": 2}, "baseline", 0.0) == 2.0
    with pytest.raises(InvalidArgument, match="parameters.patch_size: expected an int64"):
        int_param({"patch_size": 1.5}, "patch_size", None)
    with pytest.raises(InvalidArgument, match="parameters.patch_size: 0, expected at least 1"):
        int_param({"patch_size": 0}, "patch_size", None, minimum=1)
    with pytest.raises(InvalidArgument, match="parameters.baseline: expected a double"):
        float_param({"baseline": True}, "baseline", 0.0)
    with pytest.raises(InvalidArgument, match="expected a finite number"):
        float_param({"baseline": float("nan")}, "baseline", 0.0)


def test_methods_by_name() -> None:
    assert sorted(METHODS) == ["kernel_shap", "occlusion", "tokens"]
    assert check_method("occlusion") == "occlusion"
    with pytest.raises(InvalidArgument, match="method: unknown method 'lime'"):
        check_method("lime")
