"""One trace across gateway, registry and inference, exported over OTLP/gRPC to a
real receiver the test runs (opentelemetry-proto's collector TraceService)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

from services.registry.client import RegistryClient
from tests.otlp import Receiver, Span
from tests.servers import ServiceProcess

SERVICES = ("maas-gateway", "maas-inference", "maas-registry")
# Three requests that arrive within a second of each other are batched together (a
# batch of 3 is dispatched as soon as the third arrives; a busy machine can spread the
# three over more than the 200 ms this waited before).
BATCHING = "dynamic_batching: {max_queue_delay_us: 1000000, max_batch_size: 3}\n"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.stop()


def otel_env(endpoint: str, service: str) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_SERVICE_NAME": service,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }


def traceparent() -> tuple[str, str, str]:
    """A client span of our own: (trace id, span id, traceparent header)."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


def pair_request(version: str = "") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="pair", model_version=version)
    for name in ("a", "b"):
        request.inputs.add(name=name, datatype="FP32", shape=[1, 4])
        request.raw_input_contents.append(np.ones((1, 4), np.float32).tobytes())
    return request


async def wait_for_version(address: str, version: str) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for _ in range(300):
            try:
                reply = await stub.ModelInfer(pair_request("production"), timeout=5)
                if reply.model_version == version:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"version {version} never served")


async def wait_serving(address: str) -> None:
    """Until the service reports SERVING: for the gateway, its registry snapshot loaded."""
    async with grpc.aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        serving = health_pb2.HealthCheckResponse.SERVING
        async for reply in health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=60):
            if reply.status == serving:
                return


def by_id(spans: list[Span]) -> dict[str, Span]:
    return {s.span_id: s for s in spans}


def ancestors(span: Span, index: dict[str, Span]) -> list[Span]:
    chain = []
    while span.parent_id in index:
        span = index[span.parent_id]
        chain.append(span)
    return chain


async def test_one_trace_through_all_three_services(
    receiver: Receiver, tmp_path: Path, test_models: Path
) -> None:
    endpoint = receiver.start()
    registry = ServiceProcess(
        "registry",
        ["--data-dir", str(tmp_path / "reg"), "--no-auth"],
        tmp_path,
        env=otel_env(endpoint, "maas-registry"),
    )
    processes = [registry]
    try:
        model = test_models / "pair" / "1" / "model.onnx"
        async with RegistryClient(registry.address) as client:
            await client.upload("pair", model, alias="production")
        inference = ServiceProcess(
            "inference",
            ["--registry", registry.address, "--cache-dir", str(tmp_path / "c")],
            tmp_path,
            env=otel_env(endpoint, "maas-inference"),
        )
        processes.append(inference)
        gateway = ServiceProcess(
            "gateway",
            ["--registry", registry.address, "--backends", inference.address, "--no-auth"],
            tmp_path,
            env=otel_env(endpoint, "maas-gateway"),
        )
        processes.append(gateway)
        # Only once the gateway has its snapshot (a busy machine can delay it past the
        # upload below, and then version 2 is in it and nothing is stale).
        await wait_serving(gateway.address)
        # A new version after the gateway started: its route goes stale, and the next
        # request through the gateway re-reads it from the registry (in that trace).
        async with RegistryClient(registry.address) as client:
            await client.upload("pair", model, alias="production", config=BATCHING)
        await wait_for_version(inference.address, "2")

        traces = [traceparent() for _ in range(4)]
        async with grpc.aio.insecure_channel(gateway.address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            first = traces[0]
            reply = await stub.ModelInfer(pair_request(), metadata=(("traceparent", first[2]),))
            assert reply.model_version == "2"
            # Several at once: one batch carries them all.
            await asyncio.gather(
                *(
                    stub.ModelInfer(pair_request(), metadata=(("traceparent", t[2]),))
                    for t in traces[1:]
                )
            )

        def complete(spans: list[Span]) -> bool:
            ours = [s for s in spans if s.trace_id == first[0]]
            services = {s.service for s in ours}
            batches = [s for s in spans if s.name == "inference.batch" and len(s.links) >= 3]
            return (
                set(SERVICES) <= services
                and bool(batches)
                and any(s.name == "inference.ort_run" for s in ours)
            )

        spans = receiver.wait_for(complete, timeout=30)
    finally:
        for process in reversed(processes):
            process.stop()

    trace_id, client_span, _ = traces[0]
    ours = [s for s in spans if s.trace_id == trace_id]
    index = by_id(ours)
    assert {s.service for s in ours} >= set(SERVICES)
    # client -> gateway: the gateway's server span is the child of our client span.
    gateway_server = next(
        s for s in ours if s.service == "maas-gateway" and s.parent_id == client_span
    )
    assert gateway_server.name == "/inference.GRPCInferenceService/ModelInfer"
    assert gateway_server.attributes["rpc.system"] == "grpc"
    assert gateway_server.attributes["maas.model"] == "pair"
    assert gateway_server.attributes["maas.resolved_version"] == "2"
    lookup = next(s for s in ours if s.name == "gateway.route.lookup")
    assert lookup.attributes["maas.cache_hit"] is False
    # gateway -> registry: the re-read of the stale route.
    registry_span = next(s for s in ours if s.service == "maas-registry")
    assert gateway_server in ancestors(registry_span, index)
    # gateway -> inference -> batch -> ORT.
    # The call that answered: a gateway that still believed version 1 loaded may have
    # asked for it first (NOT_FOUND, then a re-read and a retry, in this same trace).
    inference_server = next(
        s
        for s in ours
        if s.service == "maas-inference"
        and s.name == "/inference.GRPCInferenceService/ModelInfer"
        and s.attributes.get("rpc.grpc.status_code", 0) == 0
    )
    attempt = next(s for s in ancestors(inference_server, index) if s.name == "gateway.backend")
    assert attempt.attributes["maas.attempt"] >= 0
    assert gateway_server in ancestors(attempt, index)
    ort_run = next(s for s in ours if s.name == "inference.ort_run")
    batch = index[ort_run.parent_id]
    assert batch.name == "inference.batch"
    assert inference_server in ancestors(batch, index)
    # The batch of the concurrent requests links to each of their request spans.
    linked = next(s for s in spans if s.name == "inference.batch" and len(s.links) >= 3)
    linked_traces = {t for t, _ in linked.links}
    assert {t[0] for t in traces[1:]} <= linked_traces
    assert linked.attributes["maas.batch_size"] >= 3
