"""ModelInfer through the gateway on multiplexed Forward streams (maas.internal.v1).

The same requests through a multiplexing gateway and a unary one get the same
answers, codes and messages; the frame's deadline and cancel reach the backend's
work; the connections are distinct; a backend without Forward is called unary.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import numpy as np
import pytest
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from maas_proto.internal.v1 import forward_pb2 as fw

from services.gateway.main import GatewayServer
from services.gateway.mux import CALLS_PATH
from services.inference.main import InferenceServer
from tests.integration.gateway.conftest import (
    StartGateway,
    StartInference,
    backend_address,
    output,
    pair_request,
    until,
    v2_server,
)

Connect = Callable[[GatewayServer], pb_grpc.GRPCInferenceServiceStub]


INFLIGHT = "maas_inference_inflight_requests"
# Rows of a `slow` request that stays multiplexed (under 1 MiB) and takes a while.
ROWS = 240


def slow_request(rows: int) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="slow")
    request.inputs.add(name="x", datatype="FP32", shape=[rows, 1024])
    request.raw_input_contents.append(np.ones((rows, 1024), np.float32).tobytes())
    return request


def bad_requests() -> list[pb.ModelInferRequest]:
    wrong_type = pair_request()
    wrong_type.inputs[0].datatype = "INT32"
    wrong_shape = pair_request()
    wrong_shape.inputs[1].shape[:] = [1, 5]
    unknown_input = pair_request()
    unknown_input.inputs[0].name = "c"
    short_raw = pair_request()
    short_raw.raw_input_contents[0] = b"\0" * 3
    missing = pair_request()
    del missing.raw_input_contents[1]
    unknown_version = pair_request("9")
    unknown_model = pb.ModelInferRequest(model_name="nope")
    return [
        wrong_type,
        wrong_shape,
        unknown_input,
        short_raw,
        missing,
        unknown_version,
        unknown_model,
    ]


async def outcome(
    stub: pb_grpc.GRPCInferenceServiceStub, request: pb.ModelInferRequest
) -> tuple[str, str]:
    try:
        await stub.ModelInfer(request, timeout=10)
    except grpc.aio.AioRpcError as exc:
        return exc.code().name, exc.details() or ""
    return "OK", ""


async def test_answers_codes_and_messages_match_the_unary_path(
    start_inference: StartInference, start_gateway: StartGateway, connect: Connect
) -> None:
    backend = await start_inference()
    address = backend_address(backend)
    muxed = await start_gateway(backends=address, backend_mux=True)
    unary = await start_gateway(backends=address, backend_mux=False)
    mux_stub, unary_stub = connect(muxed), connect(unary)

    answer = await mux_stub.ModelInfer(pair_request("1"), timeout=10)
    same = await unary_stub.ModelInfer(pair_request("1"), timeout=10)
    assert answer.model_version == same.model_version == "1"
    assert np.array_equal(output(answer, "sum"), output(same, "sum"))
    assert output(answer, "sum").tolist() == [[2.0, 3.0, 4.0, 5.0]]

    for request in bad_requests():
        via_mux = await outcome(mux_stub, request)
        assert via_mux[0] != "OK"
        assert via_mux == await outcome(unary_stub, request), request
    # The multiplexing gateway really used its streams (and the other none).
    assert muxed.pool.backends[address].mux is not None
    assert unary.pool.backends[address].mux is None
    assert backend.forward.peers, "no Forward stream reached the backend"


async def test_calls_spread_over_distinct_connections(
    start_inference: StartInference, start_gateway: StartGateway, connect: Connect
) -> None:
    backend = await start_inference()
    gateway = await start_gateway(
        backends=backend_address(backend), backend_mux=True, backend_connections=3
    )
    stub = connect(gateway)
    await asyncio.gather(*(stub.ModelInfer(pair_request("1"), timeout=10) for _ in range(12)))
    for _ in range(6):
        await stub.ModelInfer(pair_request("1"), timeout=10)
    # Three streams, each on a TCP connection of its own (distinct client ports), so
    # SO_REUSEPORT workers behind one port would each get some.
    assert len(backend.forward.peers) == 3
    assert len(set(backend.forward.peers)) == 3, backend.forward.peers


async def test_a_caller_that_cancels_cancels_the_backend_work(
    make_repository: Callable[..., Path],
    start_inference: StartInference,
    start_gateway: StartGateway,
    connect: Connect,
) -> None:
    root = make_repository("slow")
    (root / "slow" / "config.yaml").write_text("dynamic_batching: {max_batch_size: 8192}\n")
    backend = await start_inference(root)
    gateway = await start_gateway(backends=backend_address(backend), backend_mux=True)
    stub = connect(gateway)
    await stub.ModelInfer(slow_request(1), timeout=10)  # the stream is open
    async with grpc.aio.insecure_channel(backend_address(backend)) as direct:
        # A long run straight to the backend, so that the call queues behind it and is
        # surely still waiting when it is cancelled.
        busy = pb_grpc.GRPCInferenceServiceStub(direct).ModelInfer(slow_request(8192), timeout=120)
        registry = backend.metrics_registry
        model = {"model": "slow", "version": "1"}
        await until(lambda: registry.get_sample_value(INFLIGHT, model) == 1)
        call = stub.ModelInfer(slow_request(ROWS), timeout=60)
        await until(lambda: registry.get_sample_value(INFLIGHT, model) == 2)
        assert backend.forward.open_calls == 1
        call.cancel()
        labels = {**model, "code": "CANCELLED"}
        await until(lambda: registry.get_sample_value("maas_inference_requests_total", labels) == 1)
        busy.cancel()
    # The stream carries on.
    await stub.ModelInfer(slow_request(1), timeout=10)


async def forward_calls(
    backend: InferenceServer, frames: list[fw.Frame], replies: int
) -> list[fw.Frame]:
    """Frames sent straight to a backend's Forward service; the first `replies` back."""
    async with grpc.aio.insecure_channel(backend_address(backend)) as channel:
        call = channel.stream_stream(
            CALLS_PATH,
            request_serializer=fw.Frames.SerializeToString,
            response_deserializer=fw.Frames.FromString,
        )()
        await call.write(fw.Frames(frames=frames[:1]))  # one alone, the rest together
        await call.write(fw.Frames(frames=frames[1:]))
        answers: list[fw.Frame] = []
        while len(answers) < replies:
            answers.extend((await call.read()).frames)
        call.cancel()
        return answers


async def test_expired_work_is_dropped_before_it_runs(start_inference: StartInference) -> None:
    backend = await start_inference()
    payload = pair_request("1").SerializeToString()
    expired = fw.Frame(call_id=7, method="ModelInfer", payload=payload, timeout_us=1)
    fine = fw.Frame(call_id=8, method="ModelInfer", payload=payload, timeout_us=10_000_000)
    replies = {f.call_id: f for f in await forward_calls(backend, [expired, fine], 2)}
    assert replies[7].status == "DEADLINE_EXCEEDED" and not replies[7].payload
    assert replies[8].status == ""
    assert pb.ModelInferResponse.FromString(replies[8].payload).model_version == "1"
    stats = backend.app.statistics("pair", "1")
    assert sum(s.inference_count for s in stats) == 1


async def test_a_bad_frame_answers_that_call_only(start_inference: StartInference) -> None:
    backend = await start_inference()
    undecodable = fw.Frame(call_id=1, method="ModelInfer", payload=b"\xff\xff", timeout_us=10**7)
    other = fw.Frame(call_id=2, method="ModelMetadata", payload=b"", timeout_us=10**7)
    good = fw.Frame(
        call_id=3,
        method="ModelInfer",
        payload=pair_request("1").SerializeToString(),
        timeout_us=10**7,
    )
    replies = {f.call_id: f for f in await forward_calls(backend, [undecodable, other, good], 3)}
    assert replies[1].status == "INVALID_ARGUMENT"
    assert "not a valid protobuf message" in replies[1].message
    assert replies[2].status == "UNIMPLEMENTED"
    assert replies[3].status == ""


@pytest.fixture
async def unary_only_backend(start_inference: StartInference) -> AsyncIterator[str]:
    """A v2 server without the Forward service, over a real inference app."""
    inference = await start_inference()
    stub_channel = grpc.aio.insecure_channel(backend_address(inference))
    stub = pb_grpc.GRPCInferenceServiceStub(stub_channel)

    async def infer(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        reply = await stub.ModelInfer(pb.ModelInferRequest.FromString(request), timeout=10)
        return reply.SerializeToString()

    async def index(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        reply = await stub.RepositoryIndex(pb.RepositoryIndexRequest(), timeout=10)
        return reply.SerializeToString()

    server = await v2_server({"ModelInfer": infer, "RepositoryIndex": index})
    yield f"localhost:{server.port}"
    await server.shutdown(0)
    await stub_channel.close()


async def test_a_backend_without_forward_is_called_unary(
    unary_only_backend: str, start_gateway: StartGateway, connect: Connect
) -> None:
    gateway = await start_gateway(backends=unary_only_backend, backend_mux=True)
    stub = connect(gateway)
    for _ in range(3):
        answer = await stub.ModelInfer(pair_request("1"), timeout=10)
        assert answer.model_version == "1"
    mux = gateway.pool.backends[unary_only_backend].mux
    assert mux is not None and not mux.supported


async def test_a_stream_that_breaks_fails_its_calls_over_to_another_backend(
    make_repository: Callable[..., Path],
    start_inference: StartInference,
    start_gateway: StartGateway,
    connect: Connect,
    caplog: pytest.LogCaptureFixture,
) -> None:
    root = make_repository("slow")
    (root / "slow" / "config.yaml").write_text("dynamic_batching: {max_batch_size: 4096}\n")
    first, second = await start_inference(root), await start_inference(root)
    gateway = await start_gateway(
        backends=f"{backend_address(first)},{backend_address(second)}", backend_mux=True
    )
    stub = connect(gateway)
    await stub.ModelInfer(slow_request(1), timeout=10)
    async with grpc.aio.insecure_channel(backend_address(first)) as direct:
        # A long run on the first backend: the calls sent there wait behind it.
        busy = pb_grpc.GRPCInferenceServiceStub(direct).ModelInfer(slow_request(4096), timeout=120)
        registry = first.metrics_registry
        model = {"model": "slow", "version": "1"}
        await until(lambda: registry.get_sample_value(INFLIGHT, model) == 1)
        calls = []
        for _ in range(50):  # until the balancer sends one to the first backend
            call = stub.ModelInfer(slow_request(1), timeout=60)
            calls.append(call)
            await until(lambda c=call: first.forward.open_calls == 1 or c.done())
            if first.forward.open_calls == 1:
                break
        broken = first.forward.open_calls
        await first.shutdown(0)  # its streams break with calls on them
        busy.cancel()
    # UNAVAILABLE from the broken stream: the call is retried on the other backend.
    answers = await asyncio.gather(*calls)
    assert [a.model_name for a in answers] == ["slow"] * len(calls)
    assert broken == 1
    # The next call opens a stream again (to the backend still up).
    await stub.ModelInfer(slow_request(1), timeout=10)
    assert "never retrieved" not in caplog.text


async def test_a_draining_backend_ends_its_streams_instead_of_waiting_out_the_grace(
    start_inference: StartInference, start_gateway: StartGateway, connect: Connect
) -> None:
    backend = await start_inference()
    gateway = await start_gateway(backends=backend_address(backend), backend_mux=True)
    await connect(gateway).ModelInfer(pair_request("1"), timeout=10)
    assert backend.forward.peers  # an idle stream stays open between calls
    # A stream counts as a call in flight: were it not ended, the server would wait
    # the whole grace period (60 s) before stopping.
    stopping = asyncio.ensure_future(backend.grpc.shutdown(60))
    await until(lambda: not backend.forward.peers)
    await until(stopping.done)
    await stopping


async def test_large_requests_go_unary(
    make_repository: Callable[..., Path],
    start_inference: StartInference,
    start_gateway: StartGateway,
    connect: Connect,
) -> None:
    root = make_repository("slow")
    (root / "slow" / "config.yaml").write_text("dynamic_batching: {max_batch_size: 512}\n")
    backend = await start_inference(root)
    gateway = await start_gateway(backends=backend_address(backend), backend_mux=True)
    stub = connect(gateway)
    large = slow_request(512)  # 2 MiB: more to copy than a call costs
    assert len(large.SerializeToString()) > 1 << 20
    answer = await stub.ModelInfer(large, timeout=30)
    assert list(answer.outputs[0].shape) == [512, 1024]
    assert not backend.forward.peers  # no stream was opened for it
    await stub.ModelInfer(slow_request(1), timeout=10)
    assert backend.forward.peers
