"""tools.demo.images.preprocess: the efficientnet demo's input, from any picture."""

from __future__ import annotations

import numpy as np
import pytest

from tools.demo.images import preprocess


def test_shorter_side_to_256_then_the_centre() -> None:
    # Left half dark, right half bright, 300 x 600: the crop keeps the middle.
    image = np.zeros((300, 600, 3), np.uint8)
    image[:, 300:] = 255
    out = preprocess(image)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    assert out[:, :100].max() == 0 and out[:, 124:].min() == 255


@pytest.mark.parametrize("shape", [(50, 80), (80, 50, 4), (224, 224, 3)])
def test_grey_rgba_and_small_pictures(shape: tuple[int, ...]) -> None:
    out = preprocess(np.full(shape, 7, np.uint8))
    assert out.shape == (224, 224, 3)
    assert (out == 7).all()


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((8, 8, 3), np.float32), "expected a uint8 image, got float32"),
        (
            np.zeros((8, 8, 2), np.uint8),
            r"expected an HxWx3 \(or x4\) or HxW image, got shape \[8, 8, 2\]",
        ),
    ],
)
def test_bad_pictures_are_named(image: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        preprocess(image)
