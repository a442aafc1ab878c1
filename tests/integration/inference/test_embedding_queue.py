"""The embedding queue through a real inference server over gRPC: bounded in texts
(RESOURCE_EXHAUSTED beyond max_queue_size), a request larger than the queue refused
as INVALID_ARGUMENT, and a waiting request that is cancelled or whose deadline passes
taken out of the queue before it runs.

A long max_queue_delay_us holds requests in the queue until max_batch_size texts have
come, so what waits is decided by the test, not by timing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

from services.inference.tasks.embedding import EmbeddingModel
from tests.integration.conftest import StartInferenceAt
from tests.integration.inference.embedding_models import minilm_dir, repository_with
from tools.demo import minilm

HELD = """\
task: embedding
embedding:
  max_batch_size: 4
  max_queue_size: 4
  max_queue_delay_us: 60000000
warmup: []
"""
WAIT_S = 20.0


def request(count: int) -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name=minilm.NAME)
    tensor = msg.inputs.add(name="text", datatype="BYTES", shape=[count])
    tensor.contents.bytes_contents.extend(f"text number {i}".encode() for i in range(count))
    return msg


async def until(condition: Callable[[], bool], what: str) -> None:
    """Poll `condition()` until it holds, failing after WAIT_S."""
    loop = asyncio.get_running_loop()
    limit = loop.time() + WAIT_S
    while not condition():
        assert loop.time() < limit, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


@pytest.fixture
async def held(
    start_inference_at: StartInferenceAt, tmp_path: Path
) -> AsyncIterator[tuple[pb_grpc.GRPCInferenceServiceStub, EmbeddingModel]]:
    """A stub to a server whose minilm holds requests until 4 texts wait, and that model."""
    minilm_dir()
    server = await start_inference_at(repository_with(tmp_path / "repository", HELD))
    model = server.manager.resolve(minilm.NAME, "").task
    assert isinstance(model, EmbeddingModel)
    async with grpc.aio.insecure_channel(f"localhost:{server.grpc.port}") as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel), model


async def test_the_queue_is_bounded_in_texts(
    held: tuple[pb_grpc.GRPCInferenceServiceStub, EmbeddingModel],
) -> None:
    stub, model = held
    waiting = asyncio.ensure_future(stub.ModelInfer(request(3)))
    await until(lambda: model.depth == 1, "3 texts to wait for a fourth")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ModelInfer(request(2))
    assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "3 texts waiting, max_queue_size is 4" in (info.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ModelInfer(request(5))
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "5 texts in one request, expected at most 4" in (info.value.details() or "")
    # One more text fills the batch: both run together.
    last = await stub.ModelInfer(request(1))
    assert list((await waiting).outputs[0].shape) == [3, minilm.DIMENSION]
    assert list(last.outputs[0].shape) == [1, minilm.DIMENSION]
    assert (model.batcher.runs, model.batcher.texts_run) == (1, 4)


async def test_cancelled_and_expired_requests_leave_the_queue(
    held: tuple[pb_grpc.GRPCInferenceServiceStub, EmbeddingModel],
) -> None:
    stub, model = held
    cancelled = stub.ModelInfer(request(2))
    await until(lambda: model.depth == 1, "the request to queue")
    cancelled.cancel()
    await until(lambda: model.depth == 0, "the cancelled request to leave the queue")

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ModelInfer(request(3), timeout=0.5)
    assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    await until(lambda: model.depth == 0, "the expired request to leave the queue")

    # Neither ran, and neither holds room: a full batch runs at once.
    reply = await stub.ModelInfer(request(4))
    assert list(reply.outputs[0].shape) == [4, minilm.DIMENSION]
    assert (model.batcher.runs, model.batcher.texts_run) == (1, 4)
