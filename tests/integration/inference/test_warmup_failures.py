"""A model whose warm-up fails is UNAVAILABLE with the reason; the others serve.

Directory mode, through a real server on port 0. The warm-up inputs come from the
model's config (`warmup`), as Triton's `model_warmup` does.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

from services.inference.main import InferenceServer
from services.inference.settings import InferenceSettings
from tests.integration.inference.warmup_models import export_rows_of_three
from tests.servers import ServiceProcess

StartServer = Callable[[Path], Awaitable[grpc.aio.Channel]]


@pytest.fixture(scope="module")
def rows_of_three(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """model.onnx of the Reshape model that the default warm-up breaks."""
    return export_rows_of_three(tmp_path_factory.mktemp("rows") / "model.onnx")


@pytest.fixture
def repository(test_models: Path, rows_of_three: Path, tmp_path: Path) -> Path:
    """A repository with the healthy `pair` and `rows` (the Reshape model)."""
    root = tmp_path / "repository"
    shutil.copytree(test_models / "pair", root / "pair")
    (root / "rows" / "1").mkdir(parents=True)
    shutil.copy(rows_of_three, root / "rows" / "1" / "model.onnx")
    return root


@pytest.fixture
async def start_server() -> AsyncIterator[StartServer]:
    """Start an inference server over a repository; a channel to it."""
    servers: list[InferenceServer] = []
    channels: list[grpc.aio.Channel] = []

    async def start(root: Path) -> grpc.aio.Channel:
        settings = InferenceSettings(
            port=0, metrics_port=0, host="localhost", model_repository=str(root), grace_seconds=0
        )
        server = InferenceServer(settings)
        await server.start()
        servers.append(server)
        channels.append(grpc.aio.insecure_channel(f"localhost:{server.grpc.port}"))
        return channels[-1]

    yield start
    for channel in channels:
        await channel.close()
    for server in servers:
        await server.shutdown(0)


async def index(stub: pb_grpc.GRPCInferenceServiceStub) -> dict[tuple[str, str], tuple[str, str]]:
    """(name, version) -> (state, reason) from RepositoryIndex."""
    reply = await stub.RepositoryIndex(pb.RepositoryIndexRequest(), timeout=10)
    return {(m.name, m.version): (m.state, m.reason) for m in reply.models}


async def infer_rows(stub: pb_grpc.GRPCInferenceServiceStub, n: int) -> np.ndarray:
    """`rows` over x = 0..n-1; y as an array."""
    request = pb.ModelInferRequest(model_name="rows")
    request.inputs.add(name="x", datatype="FP32", shape=[n])
    request.raw_input_contents.append(np.arange(n, dtype=np.float32).tobytes())
    response = await stub.ModelInfer(request, timeout=10)
    shape = list(response.outputs[0].shape)
    return np.frombuffer(response.raw_output_contents[0], np.float32).reshape(shape)


async def infer_pair(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    request = pb.ModelInferRequest(model_name="pair")
    for name in ("a", "b"):
        request.inputs.add(name=name, datatype="FP32", shape=[1, 4])
        request.raw_input_contents.append(np.ones((1, 4), np.float32).tobytes())
    response = await stub.ModelInfer(request, timeout=10)
    assert [o.name for o in response.outputs] == ["sum", "diff"]


async def test_failed_default_warmup_is_unavailable_and_the_rest_serves(
    repository: Path, start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="services.inference.manager")
    channel = await start_server(repository)
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    rows = await index(stub)
    assert rows[("pair", "1")] == ("READY", "")
    state, reason = rows[("rows", "1")]
    assert state == "UNAVAILABLE"
    assert "warm-up with zeros" in reason and "cannot be reshaped" in reason
    assert "warmup" in reason  # how to fix it
    assert any("rows" in r.getMessage() and "warm-up" in r.getMessage() for r in caplog.records)
    await infer_pair(stub)
    assert not (await stub.ModelReady(pb.ModelReadyRequest(name="rows"))).ready
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await infer_rows(stub, 6)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "warm-up" in (caught.value.details() or "")
    health = health_pb2_grpc.HealthStub(channel)
    for name, status in (("rows", "NOT_SERVING"), ("pair", "SERVING"), ("", "SERVING")):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=name))
        assert reply.status == health_pb2.HealthCheckResponse.ServingStatus.Value(status)


async def test_configured_warmup_loads_the_model(
    repository: Path, start_server: StartServer
) -> None:
    (repository / "rows" / "config.yaml").write_text(
        "warmup:\n  - name: two_rows\n    inputs:\n      x: {shape: [6], value: 1.5}\n"
    )
    stub = pb_grpc.GRPCInferenceServiceStub(await start_server(repository))
    assert (await index(stub))[("rows", "1")] == ("READY", "")
    np.testing.assert_array_equal(await infer_rows(stub, 6), [[0, 1, 2], [3, 4, 5]])


async def test_no_warmup_loads_the_model(repository: Path, start_server: StartServer) -> None:
    (repository / "rows" / "config.yaml").write_text("warmup: []\n")
    stub = pb_grpc.GRPCInferenceServiceStub(await start_server(repository))
    assert (await index(stub))[("rows", "1")] == ("READY", "")
    assert (await infer_rows(stub, 3)).shape == (1, 3)


async def test_a_failed_configured_warmup_names_its_sample(
    repository: Path, start_server: StartServer
) -> None:
    config = repository / "rows" / "config.yaml"
    config.write_text("warmup:\n  - name: four\n    inputs:\n      x: {shape: [4]}\n")
    stub = pb_grpc.GRPCInferenceServiceStub(await start_server(repository))
    state, reason = (await index(stub))[("rows", "1")]
    assert state == "UNAVAILABLE" and "warm-up sample 'four' failed" in reason
    # A reload through the API reports the same reason, and the server keeps serving.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="rows"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "warm-up sample 'four' failed" in (caught.value.details() or "")
    await infer_pair(stub)
    # Fixing the config and loading again makes it ready without a restart.
    config.write_text("warmup:\n  - inputs:\n      x: {shape: [3]}\n")
    await stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="rows"))
    assert (await stub.ModelReady(pb.ModelReadyRequest(name="rows"))).ready


async def test_warmup_inputs_are_checked_against_the_signature(
    repository: Path, start_server: StartServer
) -> None:
    (repository / "rows" / "config.yaml").write_text(
        "warmup:\n  - inputs:\n      image: {shape: [3]}\n"
    )
    (repository / "pair" / "config.yaml").write_text(
        "warmup:\n  - name: flat\n    inputs:\n      a: {shape: [4]}\n      b: {shape: [4]}\n"
    )
    stub = pb_grpc.GRPCInferenceServiceStub(await start_server(repository))
    rows = await index(stub)
    assert rows[("rows", "1")][0] == "UNAVAILABLE"
    assert "unknown input 'image', expected inputs ['x']" in rows[("rows", "1")][1]
    assert rows[("pair", "1")][0] == "UNAVAILABLE"
    assert "warm-up sample 'flat': input 'a': shape [4], expected [-1, 4]" in rows[("pair", "1")][1]


def test_the_maas_inference_process_keeps_serving(repository: Path, tmp_path: Path) -> None:
    """The command from the bug report: it used to exit with a traceback."""
    server = ServiceProcess("inference", ["--model-repository", str(repository)], tmp_path)
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            reply = stub.RepositoryIndex(pb.RepositoryIndexRequest(), timeout=10)
            states = {m.name: m.state for m in reply.models}
            assert states == {"pair": "READY", "rows": "UNAVAILABLE"}
            assert stub.ModelReady(pb.ModelReadyRequest(name="pair"), timeout=10).ready
        assert server.process is not None and server.process.poll() is None
    finally:
        server.stop()
