"""Occlusion through a real inference server: on 100 held-out digits (the digits CNN
trained and exported from PyTorch by tools.digits), hiding the 10% of pixels occlusion
ranks highest lowers the predicted class's probability more than hiding 10% at random."""

from __future__ import annotations

import shutil
from pathlib import Path

import grpc
import numpy as np
import pytest

from tests.integration.conftest import StartInferenceAt
from tests.integration.inference.explain_models import (
    BIAS,
    LINEAR,
    WEIGHTS,
    attributions,
    build_digits,
    build_linear,
    explain,
    explain_request,
    infer,
    inference_count,
)

DIGITS = 100
PIXELS = 64
HIDDEN = round(0.1 * PIXELS)  # 6 of the 64 pixels


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("explain-occlusion")
    holdout = build_digits(root)
    build_linear(root)
    return root, holdout


def _hide(images: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """Each image with its own pixels (flat indices [n, k]) set to 0, the baseline."""
    flat = images.reshape(len(images), -1).copy()
    np.put_along_axis(flat, pixels, 0.0, axis=1)
    return flat.reshape(images.shape)


async def test_top_pixels_matter_more_than_random_ones(
    start_inference_at: StartInferenceAt, repository: tuple[Path, Path]
) -> None:
    root, holdout = repository
    with np.load(holdout) as data:
        images = data["images"][:DIGITS].astype(np.float32)
    server = await start_inference_at(root)
    async with grpc.aio.insecure_channel(f"localhost:{server.grpc.port}") as channel:
        maps = []
        for image in images:
            request = explain_request(
                "digits", {"input": image[None]}, "occlusion", patch_size=1, baseline=0.0
            )
            response = await explain(channel, request)
            assert response.evaluations == PIXELS + 2
            maps.append(attributions(response)["input"].reshape(-1))
        probabilities = await infer(channel, "digits", "input", images, "probabilities")
        predicted = probabilities.argmax(axis=1)
        rng = np.random.default_rng(0)
        top = np.argsort(-np.stack(maps), axis=1)[:, :HIDDEN]
        random = np.stack([rng.choice(PIXELS, HIDDEN, replace=False) for _ in images])
        drops = {}
        for label, pixels in (("top", top), ("random", random)):
            hidden = await infer(channel, "digits", "input", _hide(images, pixels), "probabilities")
            rows = np.arange(DIGITS)
            drops[label] = probabilities[rows, predicted] - hidden[rows, predicted]
    print(
        f"occlusion on {DIGITS} held-out digits, {HIDDEN} pixels hidden: mean drop of the "
        f"predicted class's probability {drops['top'].mean():.4f} (top-attributed) vs "
        f"{drops['random'].mean():.4f} (random)"
    )
    assert drops["top"].mean() > drops["random"].mean()


async def test_occlusion_adds_up_and_counts_its_evaluations(
    start_inference_at: StartInferenceAt, repository: tuple[Path, Path]
) -> None:
    """On the linear model each feature's drop is w_i (x_i - baseline): exact and additive."""
    server = await start_inference_at(repository[0])
    x = np.array([[1.0, -2.0, 0.5, 3.0, 1.5, -1.0]], dtype=np.float32)
    async with grpc.aio.insecure_channel(f"localhost:{server.grpc.port}") as channel:
        before = await inference_count(channel, LINEAR)
        response = await explain(channel, explain_request(LINEAR, {"x": x}, "occlusion"))
        after = await inference_count(channel, LINEAR)
    got = attributions(response)["x"]
    assert got.shape == (1, 6)
    np.testing.assert_allclose(got[0], WEIGHTS * x[0], atol=1e-5)
    assert abs(response.base_value - BIAS) < 1e-5
    assert response.error_estimate < 1e-4
    assert response.evaluations == 6 + 2 == after - before


async def test_model_without_batch_axis(
    start_inference_at: StartInferenceAt, test_models: Path, tmp_path: Path
) -> None:
    """`fixed` (y = 3x on a [2, 3] input, no batch axis) gets one request per row and
    attributions shaped like its input."""
    root = tmp_path / "repo"
    shutil.copytree(test_models / "fixed", root / "fixed")
    server = await start_inference_at(root)
    x = np.arange(1, 7, dtype=np.float32).reshape(2, 3)
    async with grpc.aio.insecure_channel(f"localhost:{server.grpc.port}") as channel:
        before = await inference_count(channel, "fixed")
        response = await explain(channel, explain_request("fixed", {"x": x}, "occlusion", target=4))
        after = await inference_count(channel, "fixed")
    got = attributions(response)["x"]
    assert got.shape == (2, 3)
    expected = np.zeros((2, 3))
    expected[1, 1] = 3 * x[1, 1]  # element 4 of y depends on x[1, 1] alone
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert response.output_value == pytest.approx(15.0)
    assert response.evaluations == 6 + 2 == after - before
