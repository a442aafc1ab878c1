"""Explanations through the gateway (issue I): a real inference server serving the digits
CNN (trained and exported from PyTorch by tools.digits) behind a real gateway, called
over gRPC (maas.explain.v1.Explainer) and REST (POST /v2/models/digits/explain).

Explain is routed as ModelInfer is (auth, allow-lists, rate, version resolution) and
draws on a per-key evaluation budget of its own; inference's answers, errors among
them, pass through with their codes and field names.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from maas_proto.explain.v1 import explain_pb2, explain_pb2_grpc
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

from services.gateway.main import GatewayServer
from services.registry.client import RegistryClient
from services.registry.main import RegistryServer
from tests.integration.conftest import READER
from tests.integration.gateway.conftest import (
    StartGateway,
    StartInference,
    backend_address,
    registry_address,
)
from tools import digits

KEYS = """keys:
  - {id: team-all, key: key-all}
  - {id: team-pair, key: key-pair, models: [pair]}
  - {id: team-small, key: key-small, rate_per_second: 1000, burst: 1000,
     explain_evaluations_per_second: 1, explain_evaluations_burst: 100}
"""
ALL = (("authorization", "Bearer key-all"),)
DIGIT_SHAPE = [1, 1, 8, 8]


@pytest.fixture(scope="module")
def digits_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository with the digits CNN as version 1, and its held-out split beside it."""
    root = tmp_path_factory.mktemp("explain") / "repository"
    digits.train_and_export(
        root / "digits" / "1" / "model.onnx", holdout_path=root.parent / "holdout.npz"
    )
    return root


@pytest.fixture(scope="module")
def holdout(digits_repository: Path) -> tuple[np.ndarray, np.ndarray]:
    split = np.load(digits_repository.parent / "holdout.npz")
    return split["images"].astype(np.float32), split["labels"]


@pytest.fixture
async def gateway(
    start_inference: StartInference,
    start_gateway: StartGateway,
    digits_repository: Path,
    tmp_path: Path,
) -> GatewayServer:
    keys = tmp_path / "keys.yaml"
    keys.write_text(KEYS)
    backend = await start_inference(digits_repository)
    return await start_gateway(backends=backend_address(backend), api_keys_file=str(keys))


@pytest.fixture
async def channel(gateway: GatewayServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"localhost:{gateway.grpc.port}") as opened:
        yield opened


def explain_request(
    image: np.ndarray, method: str, background: np.ndarray | None = None, **parameters: int
) -> explain_pb2.ExplainRequest:
    """An ExplainRequest for one digit as raw FP32 contents."""
    request = explain_pb2.ExplainRequest(model_name="digits", method=method, id="why")
    request.inputs.add(name="input", datatype="FP32", shape=list(image.shape))
    request.raw_input_contents.append(np.ascontiguousarray(image, np.float32).tobytes())
    if background is not None:
        request.background.add(name="input", datatype="FP32", shape=list(background.shape))
        request.raw_background_contents.append(background.astype(np.float32).tobytes())
    for name, value in parameters.items():
        request.parameters[name].int64_param = value
    return request


def attribution(reply: explain_pb2.ExplainResponse, name: str = "input") -> np.ndarray:
    index = [a.name for a in reply.attributions].index(name)
    tensor = reply.attributions[index]
    dtype = np.float64 if tensor.datatype == "FP64" else np.float32
    values = np.frombuffer(reply.raw_attribution_contents[index], dtype)
    return values.reshape(list(tensor.shape))


def rest(
    gateway: GatewayServer, path: str, doc: dict[str, Any], key: str | None = "key-all"
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """POST a JSON body to the gateway's HTTP port: status, JSON answer, headers."""
    headers = {"content-type": "application/json"}
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    url = f"http://localhost:{gateway.http_port}{path}"
    request = urllib.request.Request(url, json.dumps(doc).encode(), headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read()), dict(answer.headers)
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read()), dict(refused.headers)


async def rest_async(gateway: GatewayServer, *args: Any, **kwargs: Any) -> Any:
    """`rest` off the event loop, which serves the gateway."""
    return await asyncio.to_thread(rest, gateway, *args, **kwargs)


def digit_json(image: np.ndarray, name: str = "input") -> dict[str, Any]:
    return {
        "name": name,
        "datatype": "FP32",
        "shape": list(image.shape),
        "data": image.ravel().tolist(),
    }


async def test_occlusion_over_grpc_has_the_digits_shape_and_adds_up(
    channel: grpc.aio.Channel, gateway: GatewayServer, holdout: tuple[np.ndarray, np.ndarray]
) -> None:
    images, _ = holdout
    image = images[:1]
    stub = explain_pb2_grpc.ExplainerStub(channel)
    call = stub.Explain(explain_request(image, "occlusion"), metadata=ALL, timeout=60)
    reply = await call
    assert (reply.model_name, reply.model_version, reply.id) == ("digits", "1", "why")
    assert reply.method == "occlusion" and reply.output == "probabilities"
    values = attribution(reply)
    assert list(values.shape) == DIGIT_SHAPE
    # What inference would answer: the explained class is the predicted one.
    infer = pb.ModelInferRequest(model_name="digits")
    infer.inputs.add(name="input", datatype="FP32", shape=DIGIT_SHAPE)
    infer.raw_input_contents.append(image.tobytes())
    answer = await pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(infer, metadata=ALL)
    probabilities = np.frombuffer(answer.raw_output_contents[0], np.float32)
    assert reply.target == int(probabilities.argmax())
    assert reply.output_value == pytest.approx(float(probabilities.max()), abs=1e-5)
    gap = abs(values.sum() - (reply.output_value - reply.base_value))
    assert reply.error_estimate == pytest.approx(gap, abs=1e-6)
    assert 0 < reply.evaluations <= 2048
    assert dict(await call.trailing_metadata()).get("x-maas-version") == "1"
    metric = gateway.metrics_registry.get_sample_value(
        "maas_gateway_explanations_total",
        {"model": "digits", "version": "1", "code": "OK", "protocol": "grpc"},
    )
    assert metric == 1.0


async def test_kernel_shap_over_grpc_with_a_background(
    channel: grpc.aio.Channel, holdout: tuple[np.ndarray, np.ndarray]
) -> None:
    images, _ = holdout
    stub = explain_pb2_grpc.ExplainerStub(channel)
    request = explain_request(images[:1], "kernel_shap", images[1:5], max_evaluations=2048, seed=1)
    reply = await stub.Explain(request, metadata=ALL, timeout=120)
    values = attribution(reply)
    assert list(values.shape) == DIGIT_SHAPE
    assert reply.method == "kernel_shap" and 0 < reply.evaluations <= 2048
    gap = abs(values.sum() - (reply.output_value - reply.base_value))
    assert gap == pytest.approx(reply.error_estimate, abs=1e-6)


async def test_rest_explain_answers_json_attributions_with_the_input_shape(
    gateway: GatewayServer, holdout: tuple[np.ndarray, np.ndarray]
) -> None:
    images, _ = holdout
    doc = {"id": "rest", "inputs": [digit_json(images[:1])], "method": "occlusion"}
    status, answer, headers = await rest_async(gateway, "/v2/models/digits/versions/1/explain", doc)
    assert status == 200, answer
    assert (answer["model_name"], answer["model_version"], answer["id"]) == ("digits", "1", "rest")
    assert headers.get("x-maas-version") == "1"
    (values,) = answer["attributions"]
    assert (values["name"], values["shape"]) == ("input", DIGIT_SHAPE)
    assert len(values["data"]) == 64
    assert answer["method"] == "occlusion" and answer["output"] == "probabilities"
    for field in ("target", "base_value", "output_value", "error_estimate", "evaluations"):
        assert field in answer


async def test_auth_and_allow_lists_hold_for_explain(
    channel: grpc.aio.Channel, gateway: GatewayServer, holdout: tuple[np.ndarray, np.ndarray]
) -> None:
    images, _ = holdout
    stub = explain_pb2_grpc.ExplainerStub(channel)
    request = explain_request(images[:1], "occlusion")
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.Explain(request, timeout=30)
    assert missing.value.code() is grpc.StatusCode.UNAUTHENTICATED
    pair_only = (("authorization", "Bearer key-pair"),)
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await stub.Explain(request, metadata=pair_only, timeout=30)
    assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "team-pair" in (denied.value.details() or "")
    doc = {"inputs": [digit_json(images[:1])], "method": "occlusion"}
    status, answer, headers = await rest_async(gateway, "/v2/models/digits/explain", doc, None)
    assert status == 401 and headers.get("www-authenticate") == "Bearer", answer
    status, answer, _ = await rest_async(gateway, "/v2/models/digits/explain", doc, "key-pair")
    assert status == 403, answer


async def test_the_evaluation_budget_refuses_a_second_big_explanation_not_inference(
    channel: grpc.aio.Channel, gateway: GatewayServer, holdout: tuple[np.ndarray, np.ndarray]
) -> None:
    images, _ = holdout
    small = (("authorization", "Bearer key-small"),)
    stub = explain_pb2_grpc.ExplainerStub(channel)
    # Bigger than the key's burst of 100: admitted while the budget is full, taking it all.
    big = explain_request(images[:1], "occlusion", max_evaluations=2048)
    first = await stub.Explain(big, metadata=small, timeout=60)
    assert first.evaluations > 0
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.Explain(big, metadata=small, timeout=60)
    assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    message = refused.value.details() or ""
    assert "API key 'team-small' is over its explanation budget of 1 evaluations/s" in message
    # The request rate is the key's own: an inference still passes.
    infer = pb.ModelInferRequest(model_name="digits")
    infer.inputs.add(name="input", datatype="FP32", shape=DIGIT_SHAPE)
    infer.raw_input_contents.append(images[:1].tobytes())
    answer = await pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(infer, metadata=small)
    assert answer.model_name == "digits"
    doc = {"inputs": [digit_json(images[:1])], "method": "occlusion"}
    status, body, headers = await rest_async(gateway, "/v2/models/digits/explain", doc, "key-small")
    assert status == 429 and "explanation budget" in body["error"], body
    assert int(headers["retry-after"]) >= 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"method": "astrology"}, "method"),
        ({"max_evaluations": 10**9}, "max_evaluations"),
        ({"background_rows": 3}, "background"),
    ],
)
async def test_bad_input_passes_through_with_its_field_name(
    channel: grpc.aio.Channel,
    gateway: GatewayServer,
    holdout: tuple[np.ndarray, np.ndarray],
    change: dict[str, Any],
    field: str,
) -> None:
    images, _ = holdout
    method = change.get("method", "kernel_shap")
    background = np.zeros((2, 64), np.float32) if "background_rows" in change else images[1:5]
    parameters = (
        {"max_evaluations": change["max_evaluations"]} if "max_evaluations" in change else {}
    )
    request = explain_request(images[:1], method, background, **parameters)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await explain_pb2_grpc.ExplainerStub(channel).Explain(request, metadata=ALL, timeout=60)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert field in (refused.value.details() or "")
    doc: dict[str, Any] = {
        "inputs": [digit_json(images[:1])],
        "method": method,
        "background": [digit_json(background)],
        "parameters": parameters,
    }
    status, answer, _ = await rest_async(gateway, "/v2/models/digits/explain", doc)
    assert status == 400 and field in answer["error"], answer


async def test_a_malformed_rest_body_is_refused_naming_the_field(gateway: GatewayServer) -> None:
    doc: dict[str, Any] = {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 8, 8], "data": [1]}]
    }
    status, answer, _ = await rest_async(gateway, "/v2/models/digits/explain", doc)
    assert status == 400 and "input 'input'" in answer["error"], answer
    status, answer, _ = await rest_async(
        gateway, "/v2/models/digits/explain", {"inputs": [], "target": "x"}
    )
    assert status == 400 and "'target'" in answer["error"], answer


def pair_explain(version: str = "") -> explain_pb2.ExplainRequest:
    """Occlusion of `pair`'s sum[0] for a = 1..4, b = 1 (its first element: a0 + b0)."""
    request = explain_pb2.ExplainRequest(
        model_name="pair", model_version=version, method="occlusion", output="sum", target=0
    )
    for name, values in (("a", np.arange(1, 5)), ("b", np.ones(4))):
        request.inputs.add(name=name, datatype="FP32", shape=[1, 4])
        request.raw_input_contents.append(values.astype(np.float32).reshape(1, 4).tobytes())
    return request


async def explained_version(
    stub: explain_pb2_grpc.ExplainerStub, version: str = "", metadata: tuple = ()
) -> str:
    call = stub.Explain(pair_explain(version), metadata=metadata, timeout=30)
    reply = await call
    assert dict(await call.trailing_metadata())["x-maas-version"] == reply.model_version
    np.testing.assert_allclose(attribution(reply, "a").ravel(), [1, 0, 0, 0], atol=1e-6)
    return reply.model_version


async def test_explain_resolves_versions_aliases_canary_and_the_pin_as_infer_does(
    registry: RegistryServer,
    pair_in_registry: RegistryClient,
    start_inference: StartInference,
    start_gateway: StartGateway,
    tmp_path: Path,
) -> None:
    """`pair` v1 (production) and v2 in the registry; inference serves both."""
    backend = await start_inference()
    gateway = await start_gateway(
        registry=registry_address(registry),
        registry_token=READER,
        backends=backend_address(backend),
    )
    async with grpc.aio.insecure_channel(f"localhost:{gateway.grpc.port}") as opened:
        stub = explain_pb2_grpc.ExplainerStub(opened)
        assert await explained_version(stub) == "1"
        assert await explained_version(stub, "production") == "1"
        assert await explained_version(stub, "2") == "2"
        assert await explained_version(stub, metadata=(("x-maas-version", "2"),)) == "2"
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await stub.Explain(pair_explain("7"), timeout=30)
        assert unknown.value.code() is grpc.StatusCode.NOT_FOUND
    canary = tmp_path / "canary.yaml"
    canary.write_text("canary:\n  pair: {production: 0, '2': 1}\n")
    split = await start_gateway(
        registry=registry_address(registry),
        registry_token=READER,
        backends=backend_address(backend),
        canary_file=str(canary),
    )
    async with grpc.aio.insecure_channel(f"localhost:{split.grpc.port}") as opened:
        stub = explain_pb2_grpc.ExplainerStub(opened)
        assert await explained_version(stub) == "2"
        assert await explained_version(stub, "1") == "1"  # a named version is not split
