"""An API key's explanation budget is one for every gateway replica when Redis holds the
rate limits: two real gateways on one real Redis, in front of a real inference server
serving the digits CNN (trained and exported from PyTorch by tools.digits).

The budget barely refills (0.001 evaluations/s), so what one replica charges, and what
it gives back once inference says how many evaluations it spent, is what the other
replica finds.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
from maas_proto.explain.v1 import explain_pb2, explain_pb2_grpc

from services.gateway.main import GatewayServer
from tests.integration.gateway.conftest import StartGateway, StartInference
from tests.integration.gateway.shared_limits import start_replicas
from tests.redisserver import RedisServer
from tools import digits

BURST = 100.0
KEYS = f"""keys:
  - {{id: team, key: key-team, explain_evaluations_per_second: 0.001,
     explain_evaluations_burst: {BURST}}}
"""
TEAM = (("authorization", "Bearer key-team"),)


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shared-explain") / "repository"
    digits.train_and_export(
        root / "digits" / "1" / "model.onnx", holdout_path=root.parent / "holdout.npz"
    )
    return root


@pytest.fixture
async def replicas(
    start_inference: StartInference,
    start_gateway: StartGateway,
    redis_server: RedisServer,
    repository: Path,
    tmp_path: Path,
) -> list[GatewayServer]:
    return await start_replicas(
        start_inference, start_gateway, redis_server, KEYS, 2, tmp_path, repository
    )


def occlusion(image: np.ndarray, **parameters: int) -> explain_pb2.ExplainRequest:
    request = explain_pb2.ExplainRequest(model_name="digits", method="occlusion")
    request.inputs.add(name="input", datatype="FP32", shape=list(image.shape))
    request.raw_input_contents.append(np.ascontiguousarray(image, np.float32).tobytes())
    for name, value in parameters.items():
        request.parameters[name].int64_param = value
    return request


async def explain(
    gateway: GatewayServer, request: explain_pb2.ExplainRequest
) -> explain_pb2.ExplainResponse:
    async with grpc.aio.insecure_channel(f"localhost:{gateway.grpc.port}") as channel:
        stub = explain_pb2_grpc.ExplainerStub(channel)
        return await stub.Explain(request, metadata=TEAM, timeout=60)


def tokens_left(redis_server: RedisServer) -> float:
    return float(redis_server.client().hget("maas:ev:team", "tokens") or "nan")


async def test_one_budget_across_replicas_with_refunds(
    replicas: list[GatewayServer], redis_server: RedisServer, repository: Path
) -> None:
    first, second = replicas
    image = np.load(repository.parent / "holdout.npz")["images"][:1].astype(np.float32)
    # Charged its max_evaluations (the whole burst), given back what it did not spend.
    reply = await explain(first, occlusion(image, max_evaluations=int(BURST)))
    assert 0 < reply.evaluations < BURST
    assert tokens_left(redis_server) == pytest.approx(BURST - reply.evaluations, abs=0.5)
    # The other replica finds the same bucket: a full-burst explanation is refused
    # there, where a bucket of its own would have been full.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await explain(second, occlusion(image, max_evaluations=int(BURST)))
    assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "API key 'team' is over its explanation budget" in (refused.value.details() or "")
    # One that fits in what is left passes there, and spends from the same bucket.
    left = tokens_left(redis_server)
    small = await explain(second, occlusion(image, patch_size=4, max_evaluations=int(left)))
    assert 0 < small.evaluations <= left
    assert tokens_left(redis_server) == pytest.approx(left - small.evaluations, abs=0.5)
    assert set(redis_server.client().keys("maas:ev:*")) == {b"maas:ev:team"}
