"""KernelSHAP through a real inference server: exact on a linear model exported from
PyTorch, with the background from the request or stored with the version, and its
evaluations counted in the model's statistics."""

from __future__ import annotations

import shutil
from pathlib import Path

import grpc
import numpy as np
import pytest
from maas_proto.explain.v1 import explain_pb2

from services.inference.main import InferenceServer
from services.inference.settings import InferenceSettings
from services.registry.client import RegistryClient
from services.registry.main import create_server
from services.registry.settings import RegistrySettings
from tests.integration.conftest import StartInferenceAt
from tests.integration.inference.explain_models import (
    BIAS,
    LINEAR,
    WEIGHTS,
    attributions,
    build_linear,
    explain,
    explain_request,
    inference_count,
)

FEATURES = len(WEIGHTS)
ROWS = 50
# Every coalition (2^6 - 2) for each background row, the background once, the input twice.
EXACT_EVALUATIONS = 2 + ROWS * (2**FEATURES - 2 + 1)


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("explain-shap")
    build_linear(root)
    return root


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    x = rng.normal(1.0, 2.0, (1, FEATURES)).astype(np.float32)
    background = rng.normal(0.0, 1.5, (ROWS, FEATURES)).astype(np.float32)
    return x, background


def _check_exact(
    response: explain_pb2.ExplainResponse, x: np.ndarray, background: np.ndarray
) -> float:
    mean = background.astype(np.float64).mean(axis=0)
    expected = WEIGHTS.astype(np.float64) * (x[0].astype(np.float64) - mean)
    got = attributions(response)["x"]
    assert got.shape == (1, FEATURES)
    error = float(np.abs(got[0] - expected).max())
    e_f = float(WEIGHTS.astype(np.float64) @ mean + BIAS)
    f_x = float(WEIGHTS.astype(np.float64) @ x[0].astype(np.float64) + BIAS)
    print(f"kernel_shap exactness: max |phi - w(x - E[x])| = {error:.2e}")
    assert error < 1e-4
    assert abs(response.base_value - e_f) < 1e-4
    assert abs(response.output_value - f_x) < 1e-4
    assert abs(got.sum() - (f_x - e_f)) < 1e-4
    assert response.error_estimate < 1e-4
    return error


async def test_linear_attributions_are_exact(
    start_inference_at: StartInferenceAt, repository: Path
) -> None:
    server = await start_inference_at(repository)
    x, background = _data()
    async with grpc.aio.insecure_channel(f"localhost:{server.grpc.port}") as channel:
        before = await inference_count(channel, LINEAR)
        request = explain_request(
            LINEAR, {"x": x}, "kernel_shap", background={"x": background}, max_evaluations=4096
        )
        response = await explain(channel, request)
        after = await inference_count(channel, LINEAR)
    _check_exact(response, x, background)
    assert (response.output, response.target, response.method) == ("y", 0, "kernel_shap")
    assert (response.model_name, response.model_version) == (LINEAR, "1")
    # shap enumerated every coalition: the rows sent are known exactly.
    assert response.evaluations == EXACT_EVALUATIONS <= 4096
    assert after - before == response.evaluations


async def test_background_stored_with_the_version(
    start_inference_at: StartInferenceAt, repository: Path, tmp_path: Path
) -> None:
    root = tmp_path / "repo"
    shutil.copytree(repository, root)
    x, background = _data()
    np.savez(root / LINEAR / "1" / "background.npz", x=background)
    server = await start_inference_at(root)
    async with grpc.aio.insecure_channel(f"localhost:{server.grpc.port}") as channel:
        response = await explain(
            channel, explain_request(LINEAR, {"x": x}, "kernel_shap", max_evaluations=4096)
        )
    _check_exact(response, x, background)
    assert response.evaluations == EXACT_EVALUATIONS


async def test_samples_fit_a_small_budget(
    start_inference_at: StartInferenceAt, repository: Path
) -> None:
    """With fewer evaluations than the coalitions need, shap samples within the budget."""
    server = await start_inference_at(repository)
    x, background = _data()
    budget = 2 + 10 + 10 * 20
    async with grpc.aio.insecure_channel(f"localhost:{server.grpc.port}") as channel:
        before = await inference_count(channel, LINEAR)
        request = explain_request(
            LINEAR,
            {"x": x},
            "kernel_shap",
            background={"x": background[:10]},
            max_evaluations=budget,
        )
        response = await explain(channel, request)
        after = await inference_count(channel, LINEAR)
    assert 0 < response.evaluations <= budget
    assert after - before == response.evaluations
    assert response.error_estimate < 1e-4  # shap keeps the attributions additive


async def test_background_uploaded_with_the_version_in_registry_mode(
    repository: Path, tmp_path: Path
) -> None:
    """background.npz uploaded as one of the version's files reaches the inference
    cache beside model.onnx, and kernel_shap uses it."""
    x, background = _data()
    saved = tmp_path / "background.npz"
    np.savez(saved, x=background)
    registry = await create_server(
        RegistrySettings(
            data_dir=tmp_path / "registry",
            host="localhost",
            port=0,
            metrics_port=0,
            admin_token="admin-secret",
            reader_token="reader-secret",
            grace_seconds=0,
        )
    )
    await registry.start()
    inference = None
    try:
        address = f"localhost:{registry.server.port}"
        async with RegistryClient(address, "admin-secret") as admin:
            await admin.upload(
                LINEAR,
                repository / LINEAR / "1" / "model.onnx",
                extra_files={"background.npz": saved},
            )
        inference = InferenceServer(
            InferenceSettings(
                port=0,
                metrics_port=0,
                host="localhost",
                registry=address,
                registry_token="reader-secret",
                cache_dir=str(tmp_path / "cache"),
                grace_seconds=0,
            )
        )
        await inference.start()
        async with grpc.aio.insecure_channel(f"localhost:{inference.grpc.port}") as channel:
            request = explain_request(LINEAR, {"x": x}, "kernel_shap", max_evaluations=4096)
            response = await explain(channel, request)
    finally:
        if inference is not None:
            await inference.shutdown(0)
        await registry.stop(0)
    _check_exact(response, x, background)
