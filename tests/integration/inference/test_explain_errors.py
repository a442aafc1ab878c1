"""Bad explain requests through a real inference server: the status and the field named,
expected vs got, as ModelInfer answers the same mistakes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from maas_proto.explain.v1 import explain_pb2
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

from services.inference.main import InferenceServer
from tests.integration.conftest import StartInferenceAt
from tests.integration.inference.explain_models import (
    LINEAR,
    build_linear,
    explain,
    explain_request,
    inference_count,
)

CAP = 5000
X = np.ones((1, 6), dtype=np.float32)
BACKGROUND = np.zeros((10, 6), dtype=np.float32)


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("explain-errors")
    build_linear(root)
    return root


@pytest.fixture
async def server(start_inference_at: StartInferenceAt, repository: Path) -> InferenceServer:
    return await start_inference_at(repository, explain_max_evaluations=CAP)


@pytest.fixture
async def channel(server: InferenceServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"localhost:{server.grpc.port}") as ch:
        yield ch


async def _refused(
    channel: grpc.aio.Channel, request: explain_pb2.ExplainRequest
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await explain(channel, request)
    return caught.value


@pytest.mark.parametrize(
    ("request_fields", "named", "details"),
    [
        ({"method": "lime"}, "method:", ["'lime'", "kernel_shap", "occlusion", "tokens"]),
        ({"method": ""}, "method:", ["expected one of"]),
        (
            {"method": "kernel_shap", "background": {"x": np.zeros((10, 5), np.float32)}},
            "background 'x'",
            ["[10, 5]", "[-1, 6]"],
        ),
        (
            {"method": "kernel_shap", "background": {"y": BACKGROUND}},
            "background:",
            ["'y'", "['x']"],
        ),
        ({"method": "kernel_shap"}, "background:", ["has none", "background.npz"]),
        (
            {"method": "kernel_shap", "background": {"x": BACKGROUND}, "max_evaluations": CAP + 1},
            "max_evaluations:",
            [str(CAP + 1), f"at most {CAP}"],
        ),
        (
            {"method": "occlusion", "max_evaluations": 0},
            "parameters.max_evaluations:",
            ["at least 1"],
        ),
        (
            {"method": "occlusion", "max_evaluations": 5, "patch_size": 1},
            "max_evaluations:",
            ["needs 8"],
        ),
        (
            {"method": "kernel_shap", "background": {"x": BACKGROUND}, "max_evaluations": 20},
            "max_evaluations:",
            ["10 background rows", "got 20"],
        ),
        ({"method": "occlusion", "output": "z"}, "output:", ["'z'", "['y']"]),
        ({"method": "occlusion", "target": 3}, "target:", ["3", "0..0"]),
        ({"method": "occlusion", "patch_size": 0}, "parameters.patch_size:", ["at least 1"]),
        ({"method": "occlusion", "baseline": "x"}, "parameters.baseline:", ["a string"]),
    ],
)
async def test_bad_request_names_the_field(
    channel: grpc.aio.Channel,
    request_fields: dict[str, object],
    named: str,
    details: list[str],
) -> None:
    fields = dict(request_fields)
    method = str(fields.pop("method"))
    baseline = fields.pop("baseline", None)
    request = explain_request(LINEAR, {"x": X}, method, **fields)  # type: ignore[arg-type]
    if baseline is not None:
        request.parameters["baseline"].string_param = str(baseline)
    before = await inference_count(channel, LINEAR)
    error = await _refused(channel, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert error.details().startswith(named), error.details()
    for part in details:
        assert part in error.details(), error.details()
    # A request refused before its first evaluation costs the model nothing.
    if named != "target:":
        assert await inference_count(channel, LINEAR) == before


async def test_batch_of_several_examples_is_refused(channel: grpc.aio.Channel) -> None:
    error = await _refused(
        channel, explain_request(LINEAR, {"x": np.ones((2, 6), np.float32)}, "occlusion")
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input 'x': batch size 2" in error.details() and "expected 1" in error.details()


async def test_bad_input_as_model_infer_answers_it(channel: grpc.aio.Channel) -> None:
    """A wrong shape gets ModelInfer's own message: one tensor path for both."""
    bad = np.ones((1, 5), np.float32)
    error = await _refused(channel, explain_request(LINEAR, {"x": bad}, "occlusion"))
    request = pb.ModelInferRequest(model_name=LINEAR)
    request.inputs.add(name="x", datatype="FP32", shape=[1, 5])
    request.raw_input_contents.append(bad.tobytes())
    with pytest.raises(grpc.aio.AioRpcError) as infer_error:
        await pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    assert error.code() == infer_error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == infer_error.value.details()


async def test_unknown_model_is_not_found(channel: grpc.aio.Channel) -> None:
    error = await _refused(channel, explain_request("nope", {"x": X}, "occlusion"))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "'nope'" in error.details()


async def test_model_not_ready_as_model_infer(
    server: InferenceServer, channel: grpc.aio.Channel
) -> None:
    await server.manager.unload_version(LINEAR, 1)
    error = await _refused(channel, explain_request(LINEAR, {"x": X}, "occlusion"))
    request = pb.ModelInferRequest(model_name=LINEAR)
    request.inputs.add(name="x", datatype="FP32", shape=[1, 6])
    request.raw_input_contents.append(X.tobytes())
    with pytest.raises(grpc.aio.AioRpcError) as infer_error:
        await pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    assert error.code() == infer_error.value.code()
    assert error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.FAILED_PRECONDITION)


async def test_passed_deadline_is_deadline_exceeded(channel: grpc.aio.Channel) -> None:
    """A call whose deadline passes gets DEADLINE_EXCEEDED, not a late answer."""
    from maas_proto.explain.v1 import explain_pb2_grpc

    stub = explain_pb2_grpc.ExplainerStub(channel)
    request = explain_request(LINEAR, {"x": X}, "kernel_shap", background={"x": BACKGROUND})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Explain(request, timeout=0.001)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_explainer_is_in_reflection_and_health(
    server: InferenceServer, channel: grpc.aio.Channel
) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    def services() -> set[str]:
        with grpc.insecure_channel(f"localhost:{server.grpc.port}") as sync_channel:
            return set(ProtoReflectionDescriptorDatabase(sync_channel).get_services())

    assert "maas.explain.v1.Explainer" in await asyncio.to_thread(services)
    check = health_pb2.HealthCheckRequest(service="maas.explain.v1.Explainer")
    reply = await health_pb2_grpc.HealthStub(channel).Check(check, timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
