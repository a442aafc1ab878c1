"""Rate limits that hold across gateway replicas: three real gateways on one real Redis.

One key at 50 requests/s with a burst of 20, hammered through all three for 10 s,
is admitted rate x elapsed + burst times in total, not three times that: within 5%,
elapsed counted at most from the first send to the last answer, and at least from
the first admitted answer to the last send, less any stall that left the bucket full;
the rest are RESOURCE_EXHAUSTED, as each gateway's rate-limited metric agrees. The
HTTP front end takes from the same bucket.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

from services.gateway.main import GatewayServer
from tests.integration.gateway.conftest import (
    StartGateway,
    StartInference,
    pair_request,
)
from tests.integration.gateway.shared_limits import (
    answered,
    bearer,
    hammer,
    post_infer,
    rate_limited,
    redis_errors,
    start_replicas,
)
from tests.redisserver import RedisServer

_log = logging.getLogger(__name__)
Connect = Callable[[GatewayServer], pb_grpc.GRPCInferenceServiceStub]
RATE, BURST, SECONDS, REPLICAS = 50.0, 20.0, 10.0, 3
KEYS = f"""
keys:
  - {{id: team, key: key-team, rate_per_second: {RATE}, burst: {BURST}}}
  - {{id: slow, key: key-slow, rate_per_second: 0.001, burst: 4}}
"""


@pytest.fixture
async def replicas(
    start_inference: StartInference,
    start_gateway: StartGateway,
    redis_server: RedisServer,
    tmp_path: Path,
) -> list[GatewayServer]:
    return await start_replicas(
        start_inference, start_gateway, redis_server, KEYS, REPLICAS, tmp_path
    )


async def test_one_key_is_limited_across_three_replicas(
    replicas: list[GatewayServer], connect: Connect, redis_server: RedisServer
) -> None:
    tally = await hammer([connect(g) for g in replicas], "key-team", SECONDS)
    # Every decision was the shared bucket's: no replica fell back to its own.
    assert [redis_errors(g) for g in replicas] == [0.0] * REPLICAS
    # At most what the bucket can give from the first send to the last answer, and at
    # least what it gives while in use (from the first admitted answer, less the refill
    # lost while nobody asked: a stalled machine): within 5%.
    idle = tally.idle(BURST / RATE)
    most, least = RATE * tally.elapsed + BURST, RATE * (tally.served - idle) + BURST
    _log.info(
        "shared limit: %d admitted of %d in %.3f s (%.3f s served, %.3f s idle; expected"
        " %.1f to %.1f), per replica %s",
        tally.admitted,
        tally.admitted + sum(tally.codes.values()),
        tally.elapsed,
        tally.served,
        idle,
        least,
        most,
        tally.ok,
    )
    assert idle < SECONDS / 4, idle  # a machine this stalled measures nothing
    # The callers sent until the end. Not `elapsed >= SECONDS`: a stall of this event
    # loop (it runs the gateways and the callers) just before the end leaves the last
    # answer up to the stall's length before it, and the bounds use the times measured.
    assert tally.stopped >= tally.end and tally.elapsed >= SECONDS / 2, tally.elapsed
    assert 0.95 * least <= tally.admitted <= 1.05 * most, (tally.admitted, least, most)
    # Every replica served some of them: the limit is one bucket, not one per replica
    # (three per-replica buckets would admit about three times as many).
    assert all(ok > 0 for ok in tally.ok), tally.ok
    refused = tally.codes[grpc.StatusCode.RESOURCE_EXHAUSTED]
    assert refused > tally.admitted  # the callers asked for more than the rate
    assert set(tally.codes) == {grpc.StatusCode.RESOURCE_EXHAUSTED}, tally.codes
    assert tally.details == {"API key 'team' is over its rate limit of 50 requests/s"}
    assert sum(rate_limited(g, "team") for g in replicas) == refused
    assert [answered(g, "OK") for g in replicas] == tally.ok
    assert sum(answered(g, "RESOURCE_EXHAUSTED") for g in replicas) == refused
    assert redis_server.client().keys("*") == [b"maas:rl:team"]


async def test_http_takes_from_the_same_bucket(
    replicas: list[GatewayServer], connect: Connect
) -> None:
    first, second, third = replicas
    # A burst of 4 and next to no refill: two over gRPC on one replica, two over HTTP
    # on another, and the bucket is empty on all three.
    for _ in range(2):
        await connect(first).ModelInfer(pair_request(), metadata=bearer("key-slow"), timeout=10)
    for _ in range(2):
        status, _, _ = await asyncio.to_thread(post_infer, second.http_port, "key-slow")
        assert status == 200
    status, headers, body = await asyncio.to_thread(post_infer, second.http_port, "key-slow")
    assert status == 429, body
    assert int(headers["retry-after"]) > 100  # a token every 1000 s
    assert b"over its rate limit" in body
    assert rate_limited(second, "slow", "http") == 1
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await connect(third).ModelInfer(pair_request(), metadata=bearer("key-slow"), timeout=10)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
