"""How the gateway forwards Explain: what a backend receives, retries and cancellation.

The backends here are hand-made gRPC servers (real ones, on port 0) that serve
maas.explain.v1.Explainer and record each call, so what the gateway sends is seen
as the backend sees it: the service token and the caller's key id (never the
caller's own key), the request id, the caller's deadline, the resolved version
written into the request, a retry elsewhere after UNAVAILABLE, and the caller's
cancellation reaching the backend.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from maas_proto.explain.v1 import explain_pb2, explain_pb2_grpc

from services.common.server import GrpcServer, ServiceBinding
from services.common.settings import ServiceSettings
from services.gateway.main import GatewayServer
from tests.integration.gateway.conftest import V2_SERVICE, StartGateway

EXPLAINER = "maas.explain.v1.Explainer"
KEYS = "keys:\n  - {id: team-all, key: key-all}\n"
CALLER = (("authorization", "Bearer key-all"), ("x-request-id", "req-42"))
Handler = Callable[[bytes, grpc.aio.ServicerContext], Awaitable[bytes]]


@dataclass
class Seen:
    """What one backend received."""

    metadata: list[dict[str, str]] = field(default_factory=list)
    remaining: list[float] = field(default_factory=list)
    requests: list[explain_pb2.ExplainRequest] = field(default_factory=list)


async def explainer_backend(handler: Handler) -> GrpcServer:
    """A backend serving Explain through `handler` (and an empty v2 service, for health)."""
    explain = grpc.method_handlers_generic_handler(
        EXPLAINER, {"Explain": grpc.unary_unary_rpc_method_handler(handler)}
    )
    v2 = grpc.method_handlers_generic_handler(V2_SERVICE, {})
    server = GrpcServer(
        ServiceSettings(port=0, host="localhost"),
        [
            ServiceBinding(V2_SERVICE, lambda s: s.add_generic_rpc_handlers((v2,))),
            ServiceBinding(EXPLAINER, lambda s: s.add_generic_rpc_handlers((explain,))),
        ],
    )
    await server.start()
    return server


def recording(seen: Seen) -> Handler:
    async def handle(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        seen.metadata.append({k: v for k, v in context.invocation_metadata() or ()})
        seen.remaining.append(context.time_remaining() or 0.0)
        parsed = explain_pb2.ExplainRequest.FromString(request)
        seen.requests.append(parsed)
        reply = explain_pb2.ExplainResponse(
            model_name=parsed.model_name,
            model_version=parsed.model_version or "5",
            id=parsed.id,
            method=parsed.method,
            evaluations=3,
        )
        return reply.SerializeToString()

    return handle


@pytest.fixture
async def servers() -> AsyncIterator[list[GrpcServer]]:
    started: list[GrpcServer] = []
    yield started
    for server in started:
        await server.shutdown(0)


async def gateway_for(
    start_gateway: StartGateway, tmp_path: Path, *backends: GrpcServer
) -> GatewayServer:
    keys = tmp_path / "keys.yaml"
    keys.write_text(KEYS)
    return await start_gateway(
        backends=",".join(f"localhost:{b.port}" for b in backends),
        api_keys_file=str(keys),
        backend_token="service-secret",
        backend_mux=True,
    )


def request(version: str = "") -> explain_pb2.ExplainRequest:
    return explain_pb2.ExplainRequest(
        model_name="m", model_version=version, id="r", method="occlusion"
    )


async def test_a_backend_gets_the_token_key_id_request_id_deadline_and_version(
    start_gateway: StartGateway, servers: list[GrpcServer], tmp_path: Path
) -> None:
    seen = Seen()
    servers.append(await explainer_backend(recording(seen)))
    gateway = await gateway_for(start_gateway, tmp_path, *servers)
    async with grpc.aio.insecure_channel(f"localhost:{gateway.grpc.port}") as channel:
        stub = explain_pb2_grpc.ExplainerStub(channel)
        call = stub.Explain(request("3"), metadata=CALLER + (("x-maas-version", "4"),), timeout=7)
        reply = await call
    assert (reply.model_name, reply.model_version, reply.id) == ("m", "4", "r")
    assert dict(await call.trailing_metadata())["x-maas-version"] == "4"
    (metadata,) = seen.metadata
    assert metadata["authorization"] == "Bearer service-secret"  # never the caller's key
    assert metadata["x-maas-key-id"] == "team-all"
    assert metadata["x-request-id"] == "req-42"
    assert 0 < seen.remaining[0] < 8  # the caller's 7 s (gRPC rounds), not the default 30 s
    # The pin was written into the request as its version (the last field 2 wins).
    assert seen.requests[0].model_version == "4" and seen.requests[0].method == "occlusion"


async def test_unavailable_is_retried_on_another_backend(
    start_gateway: StartGateway, servers: list[GrpcServer], tmp_path: Path
) -> None:
    refused = 0

    async def unavailable(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        nonlocal refused
        refused += 1
        await context.abort(grpc.StatusCode.UNAVAILABLE, "model 'm' is loading")
        raise AssertionError("abort returns no value")

    seen = Seen()
    servers.append(await explainer_backend(unavailable))
    servers.append(await explainer_backend(recording(seen)))
    gateway = await gateway_for(start_gateway, tmp_path, *servers)
    async with grpc.aio.insecure_channel(f"localhost:{gateway.grpc.port}") as channel:
        stub = explain_pb2_grpc.ExplainerStub(channel)
        # Until the refusing backend has been picked once (each pick is a coin toss).
        for sent in range(1, 51):  # noqa: B007 - counted after the loop
            reply = await stub.Explain(request(), metadata=CALLER, timeout=10)
            assert reply.model_name == "m"
            if refused:
                break
    assert refused == 1, "the refusing backend was never picked"
    assert len(seen.requests) == sent  # every call answered, the refused one elsewhere


async def test_the_callers_cancellation_reaches_the_backend(
    start_gateway: StartGateway, servers: list[GrpcServer], tmp_path: Path
) -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def slow(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return b""

    servers.append(await explainer_backend(slow))
    gateway = await gateway_for(start_gateway, tmp_path, *servers)
    async with grpc.aio.insecure_channel(f"localhost:{gateway.grpc.port}") as channel:
        call = explain_pb2_grpc.ExplainerStub(channel).Explain(
            request(), metadata=CALLER, timeout=60
        )
        await asyncio.wait_for(started.wait(), 10)
        call.cancel()
        await asyncio.wait_for(cancelled.wait(), 10)
    metric = gateway.metrics_registry.get_sample_value(
        "maas_gateway_explanations_total",
        {"model": "", "version": "", "code": "CANCELLED", "protocol": "grpc"},
    )
    assert metric == 1.0
