"""A model ONNX Runtime cannot load names no server path to clients (issue B, item 12).

ONNX Runtime's message names the model file by its full path (`Load model from
<data dir>/cache/.../model.onnx failed`), and RepositoryIndex and ModelInfer's
UNAVAILABLE passed it on, through the gateway too. Clients now get the reason with
the file named relative to its version directory; the log keeps the full text, and
so does RepositoryIndex on inference itself for a caller holding the service token
that asks with `x-maas-detail: full`.
"""

from __future__ import annotations

import functools
import logging
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnx
import pytest
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from onnx import TensorProto, helper

from services.gateway.main import GatewayServer
from services.gateway.settings import GatewaySettings
from services.inference.main import InferenceServer
from tests.integration.conftest import StartInferenceAt

TOKEN = "service-secret"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
FULL = (*AUTH, ("x-maas-detail", "full"))


def unloadable(path: Path) -> Path:
    """A model that passes the ONNX checker but whose op no ONNX Runtime registers."""
    graph = helper.make_graph(
        [helper.make_node("Evil", ["X"], ["Y"], domain="com.evil")],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.evil", 1)],
        ir_version=8,
    )
    path.parent.mkdir(parents=True)
    onnx.save_model(model, str(path))
    return path


@pytest.fixture
def repository(test_models: Path, tmp_path: Path) -> Path:
    """`pair`, which loads, and `evil`, which ONNX Runtime refuses."""
    root = tmp_path / "server-only" / "repository"
    shutil.copytree(test_models / "pair", root / "pair")
    unloadable(root / "evil" / "1" / "model.onnx")
    return root


@pytest.fixture
def start_inference(
    repository: Path, start_inference_at: StartInferenceAt
) -> Callable[..., Awaitable[InferenceServer]]:
    return functools.partial(start_inference_at, repository)


def evil_request() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="evil")
    request.inputs.add(name="X", datatype="FP32", shape=[1, 4])
    request.raw_input_contents.append(np.zeros((1, 4), np.float32).tobytes())
    return request


async def evil_reason(stub: pb_grpc.GRPCInferenceServiceStub, metadata: Any = AUTH) -> str:
    reply = await stub.RepositoryIndex(pb.RepositoryIndexRequest(), metadata=metadata)
    rows = {m.name: m for m in reply.models}
    assert (rows["evil"].state, rows["pair"].state) == ("UNAVAILABLE", "READY")
    return str(rows["evil"].reason)


async def infer_error(stub: pb_grpc.GRPCInferenceServiceStub, metadata: Any = AUTH) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ModelInfer(evil_request(), metadata=metadata)
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE
    return info.value.details() or ""


async def test_clients_see_the_reason_without_paths_and_the_log_has_them(
    start_inference: Callable[..., Awaitable[InferenceServer]],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    server = await start_inference(service_token=TOKEN)
    async with grpc.aio.insecure_channel(f"localhost:{server.grpc.port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        reason = await evil_reason(stub)
        assert str(tmp_path) not in reason and "server-only" not in reason, reason
        # What went wrong stays: ONNX Runtime's own words, the file by its name.
        assert "com.evil:Evil" in reason and "model.onnx" in reason, reason

        message = await infer_error(stub)
        assert "version 1 is UNAVAILABLE: ONNX Runtime could not load model.onnx" in message, (
            message
        )
        assert str(tmp_path) not in message and "server-only" not in message, message

        # The admin side: the service token and x-maas-detail: full.
        full = await evil_reason(stub, FULL)
        assert str(tmp_path / "server-only" / "repository" / "evil" / "1") in full, full
    assert str(tmp_path / "server-only") in caplog.text


async def test_full_reasons_need_a_configured_service_token(
    start_inference: Callable[..., Awaitable[InferenceServer]], tmp_path: Path
) -> None:
    server = await start_inference()
    async with grpc.aio.insecure_channel(f"localhost:{server.grpc.port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert str(tmp_path) not in await evil_reason(stub, FULL)
        assert str(tmp_path) not in await infer_error(stub, FULL)


async def test_through_the_gateway_no_path_either(
    start_inference: Callable[..., Awaitable[InferenceServer]], tmp_path: Path
) -> None:
    server = await start_inference(service_token=TOKEN)
    gateway = GatewayServer(
        GatewaySettings(
            port=0,
            metrics_port=0,
            http_port=0,
            host="localhost",
            backends=f"localhost:{server.grpc.port}",
            backend_token=TOKEN,
            no_auth=True,
            grace_seconds=0,
            ready_wait_seconds=0.2,
        )
    )
    await gateway.start()
    try:
        async with grpc.aio.insecure_channel(f"localhost:{gateway.grpc.port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            # The detail header is the client's own: the gateway does not pass it on.
            for metadata in ((), (("x-maas-detail", "full"),)):
                reason = await evil_reason(stub, metadata)
                assert reason and str(tmp_path) not in reason, reason
                message = await infer_error(stub, metadata)
                assert str(tmp_path) not in message, message
    finally:
        await gateway.shutdown(0)


async def test_repository_load_errors_name_no_path(
    start_inference: Callable[..., Awaitable[InferenceServer]], repository: Path, tmp_path: Path
) -> None:
    server = await start_inference(service_token=TOKEN)
    (repository / "empty").mkdir()
    async with grpc.aio.insecure_channel(f"localhost:{server.grpc.port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for model, code in (
            ("evil", grpc.StatusCode.INVALID_ARGUMENT),
            ("empty", grpc.StatusCode.INVALID_ARGUMENT),
            ("missing", grpc.StatusCode.NOT_FOUND),
        ):
            request = pb.RepositoryModelLoadRequest(model_name=model)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.RepositoryModelLoad(request, metadata=AUTH)
            details = info.value.details() or ""
            assert info.value.code() is code, details
            assert str(tmp_path) not in details and "server-only" not in details, details


async def test_repository_load_takes_only_model_names(
    start_inference: Callable[..., Awaitable[InferenceServer]], repository: Path
) -> None:
    """RepositoryModelLoad joined the client's name to the repository's path, so '../x'
    named a directory outside it; a name now follows the model-name rule."""
    outside = repository.parent / "outside"
    shutil.copytree(repository / "pair", outside)
    server = await start_inference(service_token=TOKEN)
    async with grpc.aio.insecure_channel(f"localhost:{server.grpc.port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for name in ("../outside", "pair/../../outside", "/etc"):
            request = pb.RepositoryModelLoadRequest(model_name=name)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.RepositoryModelLoad(request, metadata=AUTH)
            assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
            assert "invalid model name" in (info.value.details() or "")
        index = await stub.RepositoryIndex(pb.RepositoryIndexRequest(), metadata=AUTH)
        assert "outside" not in {m.name for m in index.models}
