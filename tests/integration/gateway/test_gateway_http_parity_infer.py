"""Both front ends, one routing path for inference: canary splits and `x-maas-version` pins
land on the same version over HTTP as over gRPC, and a pin that names nothing fails
the same way on both (one status through the one error mapping, one message).

The backend holds `pair` versions 1 and 2 (identical files), so the answering version
shows only in each reply's model_version, checked against its `x-maas-version` header.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
import pytest
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

from services.common.errors import error_from_status
from services.gateway.app import VERSION_HEADER
from services.gateway.main import GatewayServer
from services.registry.client import RegistryClient
from services.registry.main import RegistryServer
from tests.integration.conftest import READER
from tests.integration.gateway.conftest import (
    StartGateway,
    StartInference,
    backend_address,
    pair_request,
    registry_address,
)

Connect = Callable[[GatewayServer], pb_grpc.GRPCInferenceServiceStub]
# pair_request's inputs, as the JSON body of the same request.
PAIR_JSON = {
    "inputs": [
        {"name": "a", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]},
        {"name": "b", "datatype": "FP32", "shape": [1, 4], "data": [1, 1, 1, 1]},
    ]
}


@dataclass(frozen=True)
class Outcome:
    """One front end's answer: its status ("OK" or a gRPC code name; an HTTP status),
    and the version that answered or the error's message."""

    status: str | int
    version: str = ""
    message: str = ""


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


def pin_headers(pin: str | None) -> dict[str, str]:
    return {VERSION_HEADER: pin} if pin is not None else {}


async def over_grpc(
    stub: pb_grpc.GRPCInferenceServiceStub, version: str = "", pin: str | None = None
) -> Outcome:
    call = stub.ModelInfer(
        pair_request(version), metadata=tuple(pin_headers(pin).items()), timeout=10
    )
    try:
        response = await call
    except grpc.aio.AioRpcError as exc:
        return Outcome(exc.code().name, message=exc.details() or "")
    assert dict(await call.trailing_metadata())[VERSION_HEADER] == response.model_version
    return Outcome("OK", response.model_version)


async def over_http(
    http: aiohttp.ClientSession, gateway: GatewayServer, version: str = "", pin: str | None = None
) -> Outcome:
    path = f"/v2/models/pair/versions/{version}/infer" if version else "/v2/models/pair/infer"
    url = f"http://localhost:{gateway.http_port}{path}"
    async with http.post(url, json=PAIR_JSON, headers=pin_headers(pin)) as response:
        body = await response.json(content_type=None)
        if response.status == 200:
            assert response.headers[VERSION_HEADER] == body["model_version"]
            return Outcome(200, body["model_version"])
        assert set(body) == {"error"}, body
        return Outcome(response.status, message=body["error"])


def as_http(outcome: Outcome) -> Outcome:
    """The HTTP answer a gRPC outcome stands for, through the one error mapping."""
    if outcome.status == "OK":
        return Outcome(200, outcome.version)
    mapped = error_from_status(str(outcome.status), outcome.message).http_status
    return Outcome(mapped, message=outcome.message)


@pytest.fixture
async def canary_gateway(
    registry: RegistryServer,
    admin: RegistryClient,
    test_models: Path,
    start_inference: StartInference,
    start_gateway: StartGateway,
) -> GatewayServer:
    """`pair` with production on 1 and the registry's `canary` alias on 2 at weight 100:
    every unpinned request that names no version (or production) goes to 2."""
    await admin.create_model("pair", labels={"maas.canary.weight": "100"})
    for _ in range(2):
        await admin.upload("pair", test_models / "pair" / "1" / "model.onnx")
    await admin.set_alias("pair", "production", 1)
    await admin.set_alias("pair", "canary", 2)
    backend = await start_inference()
    return await start_gateway(
        registry=registry_address(registry),
        registry_token=READER,
        backends=backend_address(backend),
    )


# (requested version, x-maas-version pin, the version that answers on both).
ROUTED = [
    ("", None, "2"),  # split to the canary
    ("production", None, "2"),  # production is split too
    ("1", None, "1"),  # a named version is not split
    ("latest", None, "2"),
    ("", "1", "1"),  # a pin beats the split
    ("", "production", "1"),  # a pin to an alias is not split
    ("", "canary", "2"),
    ("2", "1", "1"),  # a pin beats the version the request names
    ("1", "2", "2"),
]


@pytest.mark.parametrize(("version", "pin", "answered"), ROUTED)
async def test_split_and_pins_answer_from_the_same_version(
    canary_gateway: GatewayServer,
    connect: Connect,
    http: aiohttp.ClientSession,
    version: str,
    pin: str | None,
    answered: str,
) -> None:
    stub = connect(canary_gateway)
    if pin is not None and pin.isdigit():
        # A pin to a READY version: READY as both front ends report it.
        ready = await stub.ModelReady(pb.ModelReadyRequest(name="pair", version=pin), timeout=10)
        url = f"http://localhost:{canary_gateway.http_port}/v2/models/pair/versions/{pin}/ready"
        async with http.get(url) as response:
            assert ready.ready and response.status == 200
    by_grpc = await over_grpc(stub, version, pin)
    by_http = await over_http(http, canary_gateway, version, pin)
    assert by_grpc == Outcome("OK", answered)
    assert by_http == as_http(by_grpc)


# (requested version, pin, the code both give, what the message must name).
REFUSED = [
    ("", "7", "NOT_FOUND", "no version 7"),
    ("1", "7", "NOT_FOUND", "no version 7"),  # the pin is checked, not the named version
    ("", "blue", "NOT_FOUND", "no version 'blue'"),
    ("7", None, "NOT_FOUND", "no version 7"),
    ("", "01", "INVALID_ARGUMENT", f"{VERSION_HEADER} header"),
    ("", "not a version!", "INVALID_ARGUMENT", f"{VERSION_HEADER} header"),
]


@pytest.mark.parametrize(("version", "pin", "code", "named"), REFUSED)
async def test_a_pin_to_nothing_fails_alike(
    canary_gateway: GatewayServer,
    connect: Connect,
    http: aiohttp.ClientSession,
    version: str,
    pin: str | None,
    code: str,
    named: str,
) -> None:
    by_grpc = await over_grpc(connect(canary_gateway), version, pin)
    by_http = await over_http(http, canary_gateway, version, pin)
    assert by_grpc.status == code, by_grpc
    assert named in by_grpc.message, by_grpc
    if code == "NOT_FOUND":
        assert "model 'pair'" in by_grpc.message, by_grpc
    assert by_http == as_http(by_grpc)
    assert by_http.status != 200


async def test_a_weighted_split_draws_the_same_versions_over_both(
    registry: RegistryServer,
    pair_in_registry: RegistryClient,
    start_inference: StartInference,
    start_gateway: StartGateway,
    connect: Connect,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """An even split from the canary file, replayed from one seed over each front end:
    the same draws must send each request to the same version."""
    canary = tmp_path / "canary.yaml"
    canary.write_text("canary:\n  pair: {'1': 1, '2': 1}\n")
    rng = random.Random()
    backend = await start_inference()
    gateway = await start_gateway(
        registry=registry_address(registry),
        registry_token=READER,
        backends=backend_address(backend),
        canary_file=str(canary),
        rng=rng,
    )
    stub = connect(gateway)
    requests = 40  # sequential, so each draws from the generator in the same order
    rng.seed(7)
    by_grpc = [await over_grpc(stub) for _ in range(requests)]
    rng.seed(7)
    by_http = [await over_http(http, gateway) for _ in range(requests)]
    assert {o.status for o in by_grpc} == {"OK"}, by_grpc
    versions = [o.version for o in by_grpc]
    assert set(versions) == {"1", "2"}, versions  # the split did split
    assert by_http == [as_http(o) for o in by_grpc]
    # A request that names a version is not split, on either.
    for version in ("1", "2"):
        named = await over_grpc(stub, version)
        assert named == Outcome("OK", version)
        assert await over_http(http, gateway, version) == as_http(named)
