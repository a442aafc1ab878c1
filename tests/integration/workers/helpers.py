"""Helpers of the --workers tests: requests, one connection per channel, merged metrics."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable

import grpc
import numpy as np
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from prometheus_client.parser import text_string_to_metric_families

from services.common.workers import Supervisor

# How long the `held` model's batcher keeps a request waiting for a batch.
HELD_SECONDS = 5
StartSupervisor = Callable[..., Awaitable[Supervisor]]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def cnn_request(value: float = 1.0) -> pb.ModelInferRequest:
    """One 8x8 image for the test CNN."""
    request = pb.ModelInferRequest(model_name="cnn")
    request.inputs.add(name="input", datatype="FP32", shape=[1, 1, 8, 8])
    request.raw_input_contents.append(np.full((1, 1, 8, 8), value, np.float32).tobytes())
    return request


def slow_request(rows: int = 512) -> pb.ModelInferRequest:
    """A request the `slow` model spends a while on, to be in flight at a SIGTERM."""
    request = pb.ModelInferRequest(model_name="slow")
    request.inputs.add(name="x", datatype="FP32", shape=[rows, 1024])
    request.raw_input_contents.append(np.zeros((rows, 1024), np.float32).tobytes())
    return request


def connection(port: int) -> grpc.aio.Channel:
    """A channel with a connection of its own (grpc shares subchannels across channels
    by default, which would put every channel on one connection, so one worker)."""
    return grpc.aio.insecure_channel(
        f"localhost:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
    )


async def scrape(port: int, path: str = "/metrics") -> tuple[int, str]:
    """Status and body of a GET on the supervisor's metrics port."""

    def get() -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://localhost:{port}{path}", timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    return await asyncio.to_thread(get)


async def samples(port: int) -> Samples:
    """The supervisor's merged /metrics, by sample name and labels."""
    _, text = await scrape(port)
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(found: Samples, name: str, **labels: str) -> float:
    """The sum of a sample's series whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in found.items() if n == name and want <= set(ls))


def per_worker(found: Samples, name: str) -> dict[str, float]:
    """A supervisor series labelled by worker, as {worker: value}."""
    return {dict(ls)["worker"]: v for (n, ls), v in found.items() if n == name}


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float = 60.0) -> None:
    """Poll `check` until it holds, failing after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not await check():
        assert loop.time() < end, "condition not reached in time"
        await asyncio.sleep(0.05)


def stub(channel: grpc.aio.Channel) -> pb_grpc.GRPCInferenceServiceStub:
    return pb_grpc.GRPCInferenceServiceStub(channel)
