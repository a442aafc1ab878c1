"""A stream whose client stops reading holds a bounded number of answers in the server.

The services run as their own processes, so each RSS is its own. The model turns one
float per row into 256 KiB of output, so answers dominate memory: before the fix,
the window freed a slot as soon as an answer was queued, so the front door (the
inference service itself, or the gateway before it) read, ran and queued every
request the client sent, and its RSS grew by about 256 KiB a request.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

from tests.models import fan_out_model
from tests.servers import ServiceProcess

WIDTH = 65536  # floats per output row: 256 KiB an answer
SENT = 600  # requests the client sends without reading: ~150 MiB of answers
WINDOW = 64  # the inference servicer's STREAM_WINDOW, and the gateway's default
MIB = 1 << 20


@dataclass
class Front:
    """The process the client streams to, and the inference service that runs the model."""

    door: ServiceProcess
    inference: ServiceProcess


@pytest.fixture(params=["inference", "gateway"])
def front(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Front]:
    root = tmp_path / "repository"
    fan_out_model(root / "fan_out" / "1" / "model.onnx", WIDTH)
    inference = ServiceProcess("inference", ["--model-repository", str(root)], tmp_path)
    processes = [inference]
    try:
        if request.param == "gateway":
            args = ["--backends", inference.address, "--no-auth"]
            processes.append(ServiceProcess("gateway", args, tmp_path))
        yield Front(processes[-1], inference)
    finally:
        for process in reversed(processes):
            process.stop()


def rss(pid: int) -> int:
    """Resident set size of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def request(i: int) -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name="fan_out", id=str(i))
    msg.inputs.add(name="x", datatype="FP32", shape=[1, 1])
    msg.raw_input_contents.append(np.array([[float(i)]], np.float32).tobytes())
    return msg


async def executed(stub: pb_grpc.GRPCInferenceServiceStub) -> int:
    reply = await stub.ModelStatistics(pb.ModelStatisticsRequest(name="fan_out"))
    return reply.model_stats[0].inference_count


async def read_all(call: grpc.aio.StreamStreamCall, count: int) -> set[str]:
    ids = set()
    for _ in range(count):
        reply = await call.read()
        assert not reply.error_message, reply.error_message
        out = np.frombuffer(reply.infer_response.raw_output_contents[0], np.float32)
        assert out.shape == (WIDTH,) and out[0] == float(reply.infer_response.id)
        ids.add(reply.infer_response.id)
    return ids


@pytest.fixture
async def channels(front: Front) -> AsyncIterator[tuple[grpc.aio.Channel, ...]]:
    options = [("grpc.max_receive_message_length", 64 * MIB)]
    # Statistics come from the inference service over a connection of their own, so
    # the stalled stream's connection-level flow control cannot hold them up.
    own = [*options, ("grpc.use_local_subchannel_pool", 1)]
    async with (
        grpc.aio.insecure_channel(front.door.address, options) as streaming,
        grpc.aio.insecure_channel(front.inference.address, own) as control,
    ):
        yield streaming, control


async def test_a_client_that_stops_reading_holds_a_window_of_answers(
    front: Front, channels: tuple[grpc.aio.Channel, grpc.aio.Channel]
) -> None:
    server = front.door
    stub, stats = (pb_grpc.GRPCInferenceServiceStub(c) for c in channels)

    loop = asyncio.get_running_loop()
    ready_by = loop.time() + 30
    while not (await stub.ServerReady(pb.ServerReadyRequest())).ready:  # the gateway's backends
        assert loop.time() < ready_by, f"{server.service} did not become ready"
        await asyncio.sleep(0.05)

    # Warm up: a stream of two windows, read in full, so the allocator's arenas and
    # the connection's buffers are in the baseline.
    warm = stub.ModelStreamInfer()
    for i in range(2 * WINDOW):
        await warm.write(request(i))
    await warm.done_writing()
    assert len(await read_all(warm, 2 * WINDOW)) == 2 * WINDOW
    before_rss, before_runs = rss(server.pid), await executed(stats)

    call = stub.ModelStreamInfer()

    async def send() -> None:
        for i in range(SENT):
            await call.write(request(i))
        await call.done_writing()

    sender = asyncio.ensure_future(send())
    # Watch the server until it stops running requests (or has run all of them).
    deadline, peak, runs = loop.time() + 60, 0, -1
    still_since = loop.time()
    while loop.time() < deadline:
        now_runs = await executed(stats) - before_runs
        peak = max(peak, rss(server.pid))
        if now_runs != runs:
            runs, still_since = now_runs, loop.time()
        if runs >= SENT or loop.time() - still_since > 2.0:
            break
        await asyncio.sleep(0.05)  # a sampling period, not synchronisation
    growth = peak - before_rss
    print(
        f"{server.service}: client sent {SENT} requests without reading: {runs} ran, "
        f"RSS grew {growth / MIB:.1f} MiB ({SENT * WIDTH * 4 / MIB:.0f} MiB of answers sent)"
    )
    assert runs < SENT, "the server ran every request although nobody read the answers"
    assert growth < 64 * MIB, f"server RSS grew {growth / MIB:.0f} MiB for a stalled stream"

    # Reading again resumes the stream: every request is answered, exactly once.
    ids = await read_all(call, SENT)
    await sender
    assert ids == {str(i) for i in range(SENT)}
    assert await call.read() == grpc.aio.EOF
    assert await executed(stats) - before_runs == SENT
