"""Dynamic batching through a real server: outputs identical to unbatched runs.

Requests of random sizes (and, for `ragged`, random widths) are sent at once from
many coroutines; every response is compared byte for byte with ONNX Runtime
running that request alone. The models' ops are independent per row, so merging
must not change a single bit (given rows of a multiple of 16 bytes, see below).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import numpy as np
import onnx
import onnx.helper as oh
import onnxruntime as ort
import pytest
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

from services.inference.main import InferenceServer
from services.inference.settings import InferenceSettings

CONFIGS = {
    # Default batching (max_queue_delay_us 0): merges whatever queued meanwhile, so
    # how much merges depends on timing; only exactness is asserted for it.
    "cnn": "",
    # A queue delay makes merging certain, so the test does not depend on timing.
    "pair": "dynamic_batching: {max_batch_size: 16, max_queue_delay_us: 20000}",
    "ragged": "dynamic_batching: {max_batch_size: 16, max_queue_delay_us: 20000}",
    "fixed": "dynamic_batching: {max_queue_delay_us: 20000}",
    # Rows beyond max_batch_size are refused: 2048-row requests keep the instance busy.
    "slow": "dynamic_batching: {enabled: false, max_queue_size: 2, max_batch_size: 2048}",
    # Room for a few row shapes' buffers only: variable widths must not grow memory.
    "capped": "dynamic_batching: "
    "{max_batch_size: 16, max_queue_delay_us: 20000, max_buffer_bytes: 4096}",
}


def ragged_model(path: Path) -> None:
    """x [batch, n] -> y = 2x + 1 and s = sum over n: two dynamic dimensions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    value = oh.make_tensor_value_info
    two = oh.make_tensor("two", onnx.TensorProto.FLOAT, [], [2.0])
    one = oh.make_tensor("one", onnx.TensorProto.FLOAT, [], [1.0])
    axes = oh.make_tensor("axes", onnx.TensorProto.INT64, [1], [1])
    graph = oh.make_graph(
        [
            oh.make_node("Mul", ["x", "two"], ["twice"]),
            oh.make_node("Add", ["twice", "one"], ["y"]),
            oh.make_node("ReduceSum", ["x", "axes"], ["s"], keepdims=1),
        ],
        "ragged",
        [value("x", onnx.TensorProto.FLOAT, ["batch", "n"])],
        [
            value("y", onnx.TensorProto.FLOAT, ["batch", "n"]),
            value("s", onnx.TensorProto.FLOAT, ["batch", 1]),
        ],
        initializer=[two, one, axes],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.save(model, str(path))


@pytest.fixture
async def server(make_repository: Callable[..., Path]) -> AsyncIterator[InferenceServer]:
    root = make_repository("cnn", "pair", "fixed", "slow")
    ragged_model(root / "ragged" / "1" / "model.onnx")
    ragged_model(root / "capped" / "1" / "model.onnx")
    for name, text in CONFIGS.items():
        (root / name / "config.yaml").write_text(text)
    server = InferenceServer(InferenceSettings(port=0, metrics_port=0, model_repository=str(root)))
    await server.start()
    yield server
    await server.shutdown(0)


@pytest.fixture
async def stub(server: InferenceServer) -> AsyncIterator[pb_grpc.GRPCInferenceServiceStub]:
    options = [("grpc.max_receive_message_length", 64 << 20)]
    async with grpc.aio.insecure_channel(f"localhost:{server.grpc.port}", options) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def request(model: str, inputs: dict[str, np.ndarray]) -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name=model)
    for name, array in inputs.items():
        msg.inputs.add(name=name, datatype="FP32", shape=array.shape)
        msg.raw_input_contents.append(array.tobytes())
    return msg


def alone(path: Path, inputs: dict[str, np.ndarray]) -> list[bytes]:
    """What ONNX Runtime gives for this request run by itself, as raw bytes."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [out.tobytes() for out in session.run(None, inputs)]


async def stats(stub: pb_grpc.GRPCInferenceServiceStub, model: str) -> pb.ModelStatistics:
    response = await stub.ModelStatistics(pb.ModelStatisticsRequest(name=model))
    return response.model_stats[0]


def random_inputs(model: str, rng: random.Random) -> dict[str, np.ndarray]:
    rows = rng.randint(1, 5)
    gen = np.random.default_rng(rng.getrandbits(32))
    if model == "cnn":
        return {"input": gen.uniform(0, 16, (rows, 1, 8, 8)).astype(np.float32)}
    if model == "pair":
        return {n: gen.standard_normal((rows, 4)).astype(np.float32) for n in ("a", "b")}
    # Two groups that must never merge with each other. Widths are multiples of 16
    # bytes: MLAS's ReduceSum sums a row in an order that depends on the row's
    # address modulo 16, so a 5-float row at offset 20 of a merged batch can differ
    # in the last bit from the same row sent alone (see docs/configuration.md).
    width = rng.choice([4, 8])
    return {"x": gen.standard_normal((rows, width)).astype(np.float32)}


@pytest.mark.parametrize("model", ["cnn", "pair", "ragged"])
async def test_concurrent_random_requests_match_unbatched_runs(
    server: InferenceServer, stub: pb_grpc.GRPCInferenceServiceStub, model: str
) -> None:
    rng = random.Random(f"batching-{model}")
    sent = [random_inputs(model, rng) for _ in range(160)]
    before = await stats(stub, model)
    responses = []
    for wave in range(0, len(sent), 40):  # 40 requests in flight at once
        calls = [stub.ModelInfer(request(model, inputs)) for inputs in sent[wave : wave + 40]]
        responses += await asyncio.gather(*calls)
    after = await stats(stub, model)

    path = server.manager.resolve(model, "").path
    for inputs, response in zip(sent, responses, strict=True):
        assert list(response.raw_output_contents) == alone(path, inputs)
        rows = next(iter(inputs.values())).shape[0]
        assert all(out.shape[0] == rows for out in response.outputs)
    executions = after.execution_count - before.execution_count
    assert after.inference_count - before.inference_count == sum(
        next(iter(i.values())).shape[0] for i in sent
    )
    assert executions <= len(sent)
    if CONFIGS[model]:  # with a queue delay, requests certainly merged
        assert executions < len(sent), "no request was merged with another"
        assert any(b.batch_size > 5 for b in after.batch_stats)


async def test_unbatchable_model_runs_each_request_alone(
    stub: pb_grpc.GRPCInferenceServiceStub,
) -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    responses = await asyncio.gather(
        *(stub.ModelInfer(request("fixed", {"x": x + i})) for i in range(20))
    )
    for i, response in enumerate(responses):
        got = np.frombuffer(response.raw_output_contents[0], np.float32).reshape(2, 3)
        np.testing.assert_array_equal(got, (x + i) * 3.0)
    after = await stats(stub, "fixed")
    assert after.execution_count == 20
    assert [b.batch_size for b in after.batch_stats] == [1]


def slow_request(rows: int = 256) -> pb.ModelInferRequest:
    return request("slow", {"x": np.zeros((rows, 1024), np.float32)})


async def test_full_queue_is_resource_exhausted_at_once(
    stub: pb_grpc.GRPCInferenceServiceStub,
) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    finished: dict[str, list[float]] = {"ok": [], "exhausted": []}

    async def one() -> None:
        try:
            await stub.ModelInfer(slow_request())
            finished["ok"].append(loop.time() - started)
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
            assert "max_queue_size is 2" in (exc.details() or "")
            finished["exhausted"].append(loop.time() - started)

    await asyncio.gather(*(one() for _ in range(12)))
    # One runs, two wait; the rest are refused without waiting for a place in the queue.
    # (Not compared with the first run's end: on a loaded machine, decoding nine 1 MiB
    # requests may take longer than that run, which the refusals do not wait for.)
    assert len(finished["ok"]) >= 3 and finished["exhausted"]
    assert max(finished["exhausted"]) < sorted(finished["ok"])[1]


async def test_expired_requests_are_never_executed(
    server: InferenceServer, stub: pb_grpc.GRPCInferenceServiceStub
) -> None:
    model = server.manager.resolve("slow", "")
    before = await stats(stub, "slow")
    busy = asyncio.ensure_future(stub.ModelInfer(slow_request(2048)))
    # The only instance is busy with it for a while once it is admitted.
    loop = asyncio.get_running_loop()
    give_up = loop.time() + 30
    while model.inflight < 1 and loop.time() < give_up:
        await asyncio.sleep(0.005)
    for _ in range(2):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ModelInfer(slow_request(), timeout=0.02)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await busy
    # One instance, first in first out: had the expired ones run, they would have run
    # before this one answered.
    await stub.ModelInfer(slow_request(1), timeout=30)
    after = await stats(stub, "slow")
    assert after.execution_count - before.execution_count == 2
    assert after.inference_count - before.inference_count == 2048 + 1


async def test_variable_row_shapes_keep_batch_buffers_under_the_cap(
    server: InferenceServer, stub: pb_grpc.GRPCInferenceServiceStub
) -> None:
    """16 widths, each batch a buffer of 16 rows x width floats (34 KiB in all), through
    a model whose cap is 4 KiB: before the fix every width kept its buffer for good."""
    gen = np.random.default_rng(7)
    path = server.manager.resolve("capped", "").path
    widths = [4 * k for k in range(1, 17)]  # rows of multiples of 16 bytes, as above
    for width in widths:
        sent = [gen.standard_normal((2, width)).astype(np.float32) for _ in range(6)]
        responses = await asyncio.gather(
            *(stub.ModelInfer(request("capped", {"x": x})) for x in sent)
        )
        for x, response in zip(sent, responses, strict=True):
            assert list(response.raw_output_contents) == alone(path, {"x": x})
    after = await stats(stub, "capped")
    assert any(b.batch_size > 2 for b in after.batch_stats), "no request was merged"
    scheduler = server.manager.resolve("capped", "").scheduler
    assert 0 < scheduler.buffer_bytes <= 4096
