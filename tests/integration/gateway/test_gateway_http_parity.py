"""Both front ends, one path: each call, made over gRPC and over HTTP with the same key,
gets the same answer: the same status (through the one error mapping) and the same
message, the same models listed, and one rate limit across both (issue C)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

from services.common.errors import error_from_status
from services.gateway.main import GatewayServer
from tests.integration.gateway.conftest import StartGateway, StartInference, backend_address

Connect = Callable[[GatewayServer], pb_grpc.GRPCInferenceServiceStub]
KEYS = """
keys:
  - {id: team-other, key: key-other, models: [other]}
  - {id: team-all, key: key-all}
  - {id: infer-only, key: key-infer, scopes: [inference]}
  - {id: slow, key: key-slow, rate_per_second: 0.001, burst: 1}
"""


@dataclass(frozen=True)
class Case:
    """One v2 call: the gRPC method and request, and the HTTP verb and path."""

    method: str
    request: Any
    verb: str
    path: str


CASES = {
    "server-ready": Case("ServerReady", pb.ServerReadyRequest(), "GET", "/v2/health/ready"),
    "server-metadata": Case("ServerMetadata", pb.ServerMetadataRequest(), "GET", "/v2"),
    "metadata": Case(
        "ModelMetadata", pb.ModelMetadataRequest(name="pair"), "GET", "/v2/models/pair"
    ),
    "metadata-unknown": Case(
        "ModelMetadata", pb.ModelMetadataRequest(name="nope"), "GET", "/v2/models/nope"
    ),
    "config": Case(
        "ModelConfig",
        pb.ModelConfigRequest(name="pair", version="1"),
        "GET",
        "/v2/models/pair/versions/1/config",
    ),
    "stats-all": Case("ModelStatistics", pb.ModelStatisticsRequest(), "GET", "/v2/models/stats"),
    "index": Case("RepositoryIndex", pb.RepositoryIndexRequest(), "POST", "/v2/repository/index"),
    "load": Case(
        "RepositoryModelLoad",
        pb.RepositoryModelLoadRequest(model_name="pair"),
        "POST",
        "/v2/repository/models/pair/load",
    ),
}
# (case, key): the status both protocols must give ("OK" or a gRPC code name).
TABLE = [
    ("metadata", None, "UNAUTHENTICATED"),
    ("server-ready", "wrong", "UNAUTHENTICATED"),
    ("server-ready", "key-infer", "OK"),
    ("server-metadata", "key-all", "OK"),
    ("server-metadata", "key-infer", "PERMISSION_DENIED"),
    ("metadata", "key-all", "OK"),
    ("metadata", "key-other", "PERMISSION_DENIED"),
    ("metadata", "key-infer", "PERMISSION_DENIED"),
    ("metadata-unknown", "key-all", "NOT_FOUND"),
    ("config", "key-all", "OK"),
    ("config", "key-other", "PERMISSION_DENIED"),
    ("stats-all", "key-other", "OK"),
    ("stats-all", "key-all", "OK"),
    ("index", "key-other", "OK"),
    ("index", "key-infer", "PERMISSION_DENIED"),
    ("load", "key-all", "UNIMPLEMENTED"),
    ("load", "key-infer", "PERMISSION_DENIED"),
]


@pytest.fixture
async def gateway(
    start_inference: StartInference,
    start_gateway: StartGateway,
    pair_repository: Path,
    tmp_path: Path,
) -> GatewayServer:
    root = tmp_path / "two-models"
    shutil.copytree(pair_repository, root)
    (root / "other" / "1").mkdir(parents=True)
    shutil.copy(root / "pair" / "1" / "model.onnx", root / "other" / "1" / "model.onnx")
    keys = tmp_path / "keys.yaml"
    keys.write_text(KEYS)
    backend = await start_inference(root)
    return await start_gateway(backends=backend_address(backend), api_keys_file=str(keys))


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


def headers(key: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"} if key else {}


async def over_grpc(
    stub: pb_grpc.GRPCInferenceServiceStub, case: Case, key: str | None
) -> tuple[str, str, Any]:
    """(code name, message, reply) of the gRPC call."""
    try:
        reply = await getattr(stub, case.method)(
            case.request, metadata=tuple(headers(key).items()), timeout=10
        )
    except grpc.aio.AioRpcError as exc:
        return exc.code().name, exc.details() or "", None
    return "OK", "", reply


async def over_http(
    http: aiohttp.ClientSession, gateway: GatewayServer, case: Case, key: str | None
) -> tuple[int, Any]:
    """(status, JSON body or None) of the HTTP request."""
    url = f"http://localhost:{gateway.http_port}{case.path}"
    async with http.request(case.verb, url, headers=headers(key)) as response:
        body = await response.read()
        return response.status, (await response.json(content_type=None)) if body else None


def models_in(reply: Any, body: Any) -> tuple[set[str], set[str]]:
    """The model names a listing answer holds, from each protocol (statistics, index)."""
    if isinstance(reply, pb.ModelStatisticsResponse):
        return {s.name for s in reply.model_stats}, {s["name"] for s in body["model_stats"]}
    if isinstance(reply, pb.RepositoryIndexResponse):
        return {m.name for m in reply.models}, {m["name"] for m in body}
    return set(), set()


@pytest.mark.parametrize(("case", "key", "code"), TABLE, ids=[f"{c}-{k}" for c, k, _ in TABLE])
async def test_same_answer_over_both_protocols(
    gateway: GatewayServer,
    connect: Connect,
    http: aiohttp.ClientSession,
    case: str,
    key: str | None,
    code: str,
) -> None:
    call = CASES[case]
    got_code, message, reply = await over_grpc(connect(gateway), call, key)
    status, body = await over_http(http, gateway, call, key)
    assert got_code == code, message
    if code == "OK":
        assert status == 200, body
        grpc_models, http_models = models_in(reply, body)
        assert grpc_models == http_models
        if key == "key-other" and case in ("stats-all", "index"):
            assert http_models == {"other"}
        return
    assert status == error_from_status(code, message).http_status
    assert body == {"error": message}


async def test_one_rate_limit_across_both_protocols(
    gateway: GatewayServer, connect: Connect, http: aiohttp.ClientSession
) -> None:
    """The key's one token spent over gRPC is spent for HTTP too, and back."""
    case = CASES["server-metadata"]
    assert (await over_grpc(connect(gateway), case, "key-slow"))[0] == "OK"
    status, body = await over_http(http, gateway, case, "key-slow")
    assert status == 429 and "rate limit" in body["error"]
    code, message, _ = await over_grpc(connect(gateway), case, "key-slow")
    assert code == "RESOURCE_EXHAUSTED" and message == body["error"]
