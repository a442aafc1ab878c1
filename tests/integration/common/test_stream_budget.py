"""A stream that never reads holds about its byte budget of answers (issue B, item 4).

Through real inference and gateway servers: every answer is 1 MiB, the byte budget
of answer_each (STREAM_BUDGET_BYTES). Before the budget a stream made its whole
window of 64 answers for a client that read none (about 7 MB a stream in the
issue, 64 MiB here); now it makes one or two, plus what grpc has already written
into the client's flow-control window.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

from services.common.streams import STREAM_BUDGET_BYTES
from services.gateway.main import GatewayServer
from services.gateway.settings import GatewaySettings
from services.inference.main import InferenceServer
from services.inference.settings import InferenceSettings
from tests.models import fan_out_model

WIDTH = STREAM_BUDGET_BYTES // 4  # floats per answer: one budget each
SENT = 200
MOST = 16  # answers made for a stalled stream: a few, never the window of 64
MIB = 1 << 20


def request(i: int) -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name="fan_out", id=str(i))
    msg.inputs.add(name="x", datatype="FP32", shape=[1, 1])
    msg.raw_input_contents.append(np.array([[float(i)]], np.float32).tobytes())
    return msg


@pytest.fixture
async def inference(tmp_path: Path) -> AsyncIterator[InferenceServer]:
    fan_out_model(tmp_path / "repository" / "fan_out" / "1" / "model.onnx", WIDTH)
    settings = InferenceSettings(
        port=0,
        metrics_port=0,
        host="localhost",
        model_repository=str(tmp_path / "repository"),
        grace_seconds=0,
    )
    server = InferenceServer(settings)
    await server.start()
    yield server
    await server.shutdown(0)


@pytest.fixture(params=["inference", "gateway"])
async def front(request: pytest.FixtureRequest, inference: InferenceServer) -> AsyncIterator[int]:
    """The port the client streams to: inference itself, or a gateway before it."""
    if request.param == "inference":
        yield inference.grpc.port
        return
    settings = GatewaySettings(
        port=0,
        metrics_port=0,
        http_port=0,
        host="localhost",
        grace_seconds=0,
        no_auth=True,
        backends=f"localhost:{inference.grpc.port}",
    )
    gateway = GatewayServer(settings)
    await gateway.start(ready_timeout=10)
    yield gateway.grpc.port
    await gateway.shutdown(0)


async def executed(stub: pb_grpc.GRPCInferenceServiceStub) -> int:
    reply = await stub.ModelStatistics(pb.ModelStatisticsRequest(name="fan_out"))
    return reply.model_stats[0].inference_count


async def test_a_stream_that_never_reads_holds_about_its_budget(
    front: int, inference: InferenceServer
) -> None:
    options = [("grpc.max_receive_message_length", 64 * MIB)]
    # Statistics over a connection of their own, which the stalled stream cannot hold up.
    own = [*options, ("grpc.use_local_subchannel_pool", 1)]
    async with (
        grpc.aio.insecure_channel(f"localhost:{front}", options) as streaming,
        grpc.aio.insecure_channel(f"localhost:{inference.grpc.port}", own) as control,
    ):
        stub, stats = (
            pb_grpc.GRPCInferenceServiceStub(streaming),
            pb_grpc.GRPCInferenceServiceStub(control),
        )
        call = stub.ModelStreamInfer()

        async def send() -> None:
            for i in range(SENT):
                await call.write(request(i))
            await call.done_writing()

        sender = asyncio.ensure_future(send())
        loop = asyncio.get_running_loop()
        # Watch the answers made until they stop growing (or pass the bound).
        deadline, runs, still_since = loop.time() + 60, -1, loop.time()
        while loop.time() < deadline:
            now = await executed(stats)
            if now != runs:
                runs, still_since = now, loop.time()
            if runs > MOST or loop.time() - still_since > 1.0:
                break
            await asyncio.sleep(0.05)  # a sampling period, not synchronisation
        print(f"{SENT} requests sent on a stream never read: {runs} answers of 1 MiB made")
        assert 0 < runs <= MOST, f"{runs} answers of 1 MiB made for a stream that read none"

        # Reading again resumes the stream: every request is answered.
        got = set()
        for _ in range(SENT):
            reply = await call.read()
            assert not reply.error_message, reply.error_message
            got.add(reply.infer_response.id)
        await sender
        assert got == {str(i) for i in range(SENT)}


PAD = 128 * 1024  # bytes of padding per request: the hostile suite's size
PUSHED_BACK_AFTER = 1 * MIB  # request bytes a stalled stream may take in, at most
BLOCKED_S = 2.0  # a write not done by then is pushed back


def padded(i: int) -> pb.ModelInferRequest:
    msg = request(i)
    msg.parameters["pad"].string_param = "p" * PAD
    return msg


async def test_a_stream_that_never_reads_pushes_its_writer_back(front: int) -> None:
    """Once a stream has stopped reading, grpc core takes in at most its receive window.

    With BDP probing on, that window grew to several MB per stream on loopback, so
    200 unread streams held about 1 GB of requests on the server, and every client
    write completed. The client here takes nothing in either (its own window stays
    small), so the server's answers wait, and the server stops reading its requests.
    """
    options = [
        ("grpc.max_receive_message_length", 64 * MIB),
        ("grpc.http2.bdp_probe", 0),
    ]
    async with grpc.aio.insecure_channel(f"localhost:{front}", options) as streaming:
        call = pb_grpc.GRPCInferenceServiceStub(streaming).ModelStreamInfer()
        written = 0
        for i in range(64):
            try:
                await asyncio.wait_for(call.write(padded(i)), BLOCKED_S)
            except TimeoutError:
                break
            written += 1
        taken = written * PAD
        print(f"a stream never read took {written} requests of 128 KiB before pushing back")
        assert written < 64, "every write completed: nothing pushed back"
        assert taken <= PUSHED_BACK_AFTER, f"{taken} bytes of requests taken in, unread"
        call.cancel()
