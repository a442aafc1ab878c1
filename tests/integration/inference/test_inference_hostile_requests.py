"""Hostile requests to the inference service itself (issue B): each gets a clear
INVALID_ARGUMENT (or the right code) at once, is counted, and costs little.

Before the fixes an undecodable message was UNKNOWN with a Python class name, an
ERROR traceback each and no count in the metrics; one ended a whole stream; a
client-cancelled stream counted as UNKNOWN; max_batch_size was not enforced;
'latest' was NOT_FOUND; groups were accepted; a 64 KB name came back whole in the
status (RESOURCE_EXHAUSTED from gRPC's metadata limit).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

from services.common.decoding import GROUPS, TOO_MANY_FIELDS, UNDECODABLE
from services.inference.main import InferenceServer
from services.inference.settings import InferenceSettings

SERVICE = "/inference.GRPCInferenceService"
BAD = b"\xff\xff\xff"  # a field 31 key, then a truncated varint
GROUP = bytes([9 << 3 | 3, 8, 1, 9 << 3 | 4])  # field 9 as a group holding a varint
MAX_BYTES_ELEMENTS = 4096
# Details that tell a client about the server's code rather than its request.
LEAKS = re.compile(r"<class|Error\b|Traceback|\.py\b")


@pytest.fixture
async def server(test_models: Path) -> AsyncIterator[InferenceServer]:
    settings = InferenceSettings(
        port=0,
        metrics_port=0,
        model_repository=str(test_models),
        grace_seconds=1,
        max_bytes_elements=MAX_BYTES_ELEMENTS,
    )
    running = InferenceServer(settings)
    await running.start()
    yield running
    await running.shutdown(0)


@pytest.fixture
async def channel(server: InferenceServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"localhost:{server.grpc.port}") as ch:
        yield ch


def pair(id: str = "", version: str = "") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="pair", model_version=version, id=id)
    for name in ("a", "b"):
        request.inputs.add(name=name, datatype="FP32", shape=[1, 4])
        request.raw_input_contents.append(np.ones((1, 4), np.float32).tobytes())
    return request


def rpc_count(server: InferenceServer, method: str, code: str) -> float:
    value = server.metrics_registry.get_sample_value(
        "maas_inference_grpc_requests_total", {"method": f"{SERVICE}/{method}", "code": code}
    )
    return value or 0.0


async def invalid(stub: pb_grpc.GRPCInferenceServiceStub, request: pb.ModelInferRequest) -> str:
    """The details of a ModelInfer call that must fail INVALID_ARGUMENT, short and clean."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ModelInfer(request, timeout=30)
    details = caught.value.details() or ""
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, details
    assert len(details) < 400 and not LEAKS.search(details), details
    return details


async def test_undecodable_request_is_invalid_argument_counted_and_logged_once(
    server: InferenceServer, channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    infer = channel.unary_unary(f"{SERVICE}/ModelInfer")  # no serializers: raw bytes
    caplog.set_level(logging.WARNING)
    for _ in range(20):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await infer(BAD, timeout=30)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.details() == UNDECODABLE
    assert rpc_count(server, "ModelInfer", "INVALID_ARGUMENT") == 20
    lines = [r for r in caplog.records if "did not parse" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_groups_and_padding_are_invalid_argument(channel: grpc.aio.Channel) -> None:
    infer = channel.unary_unary(f"{SERVICE}/ModelInfer")
    head = pair().SerializeToString()
    # 32 MB of one-byte unknown fields: counted from the wire, never one object each.
    cases = [(head + GROUP, GROUPS), (head + b"\x78\x00" * (16 << 20), TOO_MANY_FIELDS)]
    for data, message in cases:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await infer(data, timeout=30)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.details() == message


async def test_stream_answers_each_message_around_an_undecodable_one(
    server: InferenceServer, channel: grpc.aio.Channel
) -> None:
    call = channel.stream_stream(f"{SERVICE}/ModelStreamInfer")()
    for data in (pair("1").SerializeToString(), BAD, pair("2").SerializeToString()):
        await call.write(data)
    await call.write(pair("3").SerializeToString())
    await call.done_writing()
    answers = [pb.ModelStreamInferResponse.FromString(data) async for data in call]
    assert await call.code() == grpc.StatusCode.OK
    assert sorted(a.infer_response.id for a in answers if not a.error_message) == ["1", "2", "3"]
    assert [a.error_message for a in answers if a.error_message] == [UNDECODABLE]


async def test_cancelled_stream_is_counted_cancelled(
    server: InferenceServer, channel: grpc.aio.Channel
) -> None:
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    call = stub.ModelStreamInfer()
    await call.write(pair("1"))
    assert not (await call.read()).error_message
    call.cancel()
    deadline = asyncio.get_running_loop().time() + 10
    while rpc_count(server, "ModelStreamInfer", "CANCELLED") < 1:
        assert asyncio.get_running_loop().time() < deadline, "the cancelled stream was not counted"
        await asyncio.sleep(0.01)
    assert rpc_count(server, "ModelStreamInfer", "UNKNOWN") == 0


async def test_batch_over_max_batch_size_is_invalid_argument(channel: grpc.aio.Channel) -> None:
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    config = await stub.ModelConfig(pb.ModelConfigRequest(name="cnn"))
    limit = config.config.max_batch_size
    assert limit == 32
    request = pb.ModelInferRequest(model_name="cnn")
    request.inputs.add(name="input", datatype="FP32", shape=[limit + 1, 1, 8, 8])
    request.raw_input_contents.append(bytes((limit + 1) * 64 * 4))
    details = await invalid(stub, request)
    assert "batch size 33" in details and "max_batch_size 32" in details
    request.inputs[0].shape[0] = limit
    request.raw_input_contents[0] = bytes(limit * 64 * 4)
    reply = await stub.ModelInfer(request, timeout=30)
    assert reply.outputs[0].shape[0] == limit


@pytest.mark.parametrize(
    ("shape", "typed", "raw", "needle"),
    [
        # A 37-byte request that sized a 200M-element object array first.
        ([200_000_000], [b"a"], None, "bytes_contents has 1 elements, expected 200000000"),
        ([10**9, 1, 8, 8], None, b"", "too few for 64000000000 BYTES elements"),
        # Shapes are checked against the signature before anything is decoded.
        ([2_000_000], None, bytes(8_000_000), "shape [2000000], expected [-1, -1]"),
        ([1, MAX_BYTES_ELEMENTS + 1], None, bytes(4 * (MAX_BYTES_ELEMENTS + 1)), "4097 BYTES"),
    ],
)
async def test_amplifying_bytes_tensors_are_invalid_argument(
    channel: grpc.aio.Channel,
    shape: list[int],
    typed: list[bytes] | None,
    raw: bytes | None,
    needle: str,
) -> None:
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    request = pb.ModelInferRequest(model_name="dt_bytes")
    tensor = request.inputs.add(name="x", datatype="BYTES", shape=shape)
    if typed is not None:
        tensor.contents.bytes_contents.extend(typed)
    if raw is not None:
        request.raw_input_contents.append(raw)
    assert needle in await invalid(stub, request)


async def test_bytes_elements_up_to_the_cap_round_trip(channel: grpc.aio.Channel) -> None:
    # Same-length elements take the strided path, mixed lengths the loop.
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    for items in ([b""] * MAX_BYTES_ELEMENTS, [b"ab", b"", "é".encode()] * 1000):
        request = pb.ModelInferRequest(model_name="dt_bytes")
        request.inputs.add(name="x", datatype="BYTES", shape=[1, len(items)])
        request.raw_input_contents.append(b"".join(len(i).to_bytes(4, "little") + i for i in items))
        reply = await stub.ModelInfer(request, timeout=30)
        assert list(reply.outputs[0].shape) == [1, len(items)]
        assert reply.raw_output_contents[0] == request.raw_input_contents[0]


@pytest.mark.parametrize(
    ("version", "code", "needle"),
    [
        ("1" * 5000, grpc.StatusCode.INVALID_ARGUMENT, "model_version '1111"),
        ("²", grpc.StatusCode.INVALID_ARGUMENT, "invalid model_version '²'"),
        ("x" * 70_000, grpc.StatusCode.INVALID_ARGUMENT, "(70000 characters)"),
        ("nope", grpc.StatusCode.NOT_FOUND, "has no version 'nope'"),
    ],
)
async def test_bad_versions_are_client_errors_echoed_short(
    channel: grpc.aio.Channel, version: str, code: grpc.StatusCode, needle: str
) -> None:
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ModelInfer(pair(version=version), timeout=30)
    details = caught.value.details() or ""
    assert caught.value.code() == code, details
    assert needle in details and len(details) < 400, details


async def test_long_names_are_echoed_short(channel: grpc.aio.Channel) -> None:
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ModelInfer(pb.ModelInferRequest(model_name="m" * 70_000), timeout=30)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "(70000 characters)" in (caught.value.details() or "")
    request = pair()
    request.inputs[0].name = "t" * 70_000
    assert "(70000 characters)" in await invalid(stub, request)
    request = pair()
    request.inputs[0].datatype = "D" * 70_000
    assert "(70000 characters)" in await invalid(stub, request)


async def test_latest_is_the_newest_ready_version(channel: grpc.aio.Channel) -> None:
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    reply = await stub.ModelInfer(pair(version="latest"), timeout=30)
    assert reply.model_version == "1"
    ready = await stub.ModelReady(pb.ModelReadyRequest(name="pair", version="latest"))
    assert ready.ready
