"""Helpers for the shared rate-limit tests: gateway replicas on one Redis, and a
bounded hammer that counts what the clients saw."""

from __future__ import annotations

import asyncio
import collections
import http.client
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import orjson
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

from services.gateway.main import GatewayServer
from tests.integration.gateway.conftest import (
    StartGateway,
    StartInference,
    backend_address,
    pair_request,
)
from tests.redisserver import RedisServer

# Concurrent gRPC callers per gateway: enough to keep every replica over the rate,
# few enough for a shared 2-core machine.
CALLERS = 3


async def start_replicas(
    start_inference: StartInference,
    start_gateway: StartGateway,
    redis_server: RedisServer,
    keys: str,
    count: int,
    tmp_path: Path,
    repository: Path | None = None,
) -> list[GatewayServer]:
    """`count` gateways with the API keys `keys`, on one Redis, in front of one
    inference server (over `repository`, or the pair repository)."""
    keys_file = tmp_path / "keys.yaml"
    keys_file.write_text(keys)
    backend = await (start_inference(repository) if repository else start_inference())
    return [
        await start_gateway(
            backends=backend_address(backend),
            api_keys_file=str(keys_file),
            rate_limit_redis_url=redis_server.url,
            # A busy test machine can stall a Redis round trip past the default 0.25 s;
            # fail-open would then admit from the replica's own bucket, which is the
            # outage test's subject, not these tests' (they assert no Redis error).
            rate_limit_redis_timeout_seconds=5.0,
        )
        for _ in range(count)
    ]


def bearer(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


@dataclass
class Tally:
    """What the clients saw: admitted calls per gateway, other codes, the first send,
    the first admitted answer and the last answer (event-loop time)."""

    ok: list[int]
    codes: collections.Counter[grpc.StatusCode] = field(default_factory=collections.Counter)
    details: set[str] = field(default_factory=set)
    first: float = math.inf
    first_ok: float = math.inf
    last: float = -math.inf
    end: float = math.inf  # when the callers were to stop sending
    stopped: float = -math.inf  # when the last caller stopped
    # When each request was sent (bounded by the hammer's count and time).
    sends: list[float] = field(default_factory=list)

    @property
    def admitted(self) -> int:
        return sum(self.ok)

    @property
    def elapsed(self) -> float:
        """From the first send to the last answer: no token was taken outside it."""
        return self.last - self.first

    @property
    def served(self) -> float:
        """From the first admitted answer to the last request sent: the bucket was in
        use all along. Unlike `elapsed` it leaves out the start-up (channels connecting,
        the first requests queueing on a busy machine), when the bucket sat full and
        refilled nothing, and the answers still coming in after the last send, when
        nobody asked for the refill."""
        return max(self.sends, default=self.first_ok) - self.first_ok

    def idle(self, fills: float) -> float:
        """Seconds while serving that no request was sent, beyond `fills` (the time the
        bucket takes to fill) in each gap: refill the bucket could not keep. A stall of
        the test's event loop (it runs the gateways and the callers) longer than that
        leaves the bucket full, and its tokens are lost to every caller."""
        times = sorted(t for t in self.sends if t >= self.first_ok)
        return sum(max(0.0, b - a - fills) for a, b in zip(times, times[1:], strict=False))


async def hammer(
    stubs: Sequence[pb_grpc.GRPCInferenceServiceStub], key: str, seconds: float
) -> Tally:
    """CALLERS callers per stub, each sending ModelInfer back to back for `seconds`."""
    loop = asyncio.get_running_loop()
    request, metadata = pair_request(), bearer(key)
    tally = Tally([0] * len(stubs))
    end = tally.end = loop.time() + seconds

    async def caller(index: int, stub: pb_grpc.GRPCInferenceServiceStub) -> None:
        while loop.time() < end:
            tally.first = min(tally.first, loop.time())
            tally.sends.append(loop.time())
            try:
                await stub.ModelInfer(request, metadata=metadata, timeout=10)
                tally.ok[index] += 1
                tally.first_ok = min(tally.first_ok, loop.time())
            except grpc.aio.AioRpcError as exc:
                tally.codes[exc.code()] += 1
                tally.details.add(exc.details() or "")
            tally.last = max(tally.last, loop.time())
        tally.stopped = max(tally.stopped, loop.time())

    await asyncio.gather(*(caller(i, stub) for i, stub in enumerate(stubs) for _ in range(CALLERS)))
    return tally


def rate_limited(gateway: GatewayServer, key: str, protocol: str = "grpc") -> float:
    """The gateway's count of requests refused for the key's rate."""
    value = gateway.metrics_registry.get_sample_value(
        "maas_gateway_rate_limited_requests_total", {"key": key, "protocol": protocol}
    )
    return value or 0.0


def answered(gateway: GatewayServer, code: str) -> float:
    """The gateway's count of inference requests that ended with `code`, all labels."""
    return sum(
        sample.value
        for family in gateway.metrics_registry.collect()
        if family.name == "maas_gateway_requests"
        for sample in family.samples
        if sample.name == "maas_gateway_requests_total" and sample.labels["code"] == code
    )


def redis_errors(gateway: GatewayServer) -> float:
    value = gateway.metrics_registry.get_sample_value("maas_gateway_rate_limit_redis_errors_total")
    return value or 0.0


def post_infer(port: int, key: str) -> tuple[int, dict[str, str], bytes]:
    """POST /v2/models/pair/infer with a Bearer key (blocking): status, headers, body."""
    body = orjson.dumps(
        {
            "inputs": [
                {"name": "a", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]},
                {"name": "b", "shape": [1, 4], "datatype": "FP32", "data": [1, 1, 1, 1]},
            ]
        }
    )
    connection = http.client.HTTPConnection("localhost", port, timeout=10)
    try:
        connection.request(
            "POST",
            "/v2/models/pair/infer",
            body,
            {"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        answer = connection.getresponse()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()
    finally:
        connection.close()
