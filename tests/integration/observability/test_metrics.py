"""/metrics of each service after known traffic: counts and histogram totals."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from prometheus_client.parser import text_string_to_metric_families

from services.inference.main import InferenceServer
from services.inference.settings import InferenceSettings


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics page, keyed by name and sorted labels."""
    text = urllib.request.urlopen(f"http://localhost:{port}/metrics", timeout=10).read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
async def server(test_models: Path) -> AsyncIterator[InferenceServer]:
    settings = InferenceSettings(port=0, metrics_port=0, model_repository=str(test_models))
    running = InferenceServer(settings)
    await running.start()
    yield running
    await running.shutdown(0)


def pair_request(rows: int, name_b: str = "b") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="pair")
    for name in ("a", name_b):
        request.inputs.add(name=name, datatype="FP32", shape=[rows, 4])
        request.raw_input_contents.append(np.ones((rows, 4), np.float32).tobytes())
    return request


async def test_inference_metrics_match_traffic_and_statistics(server: InferenceServer) -> None:
    async with grpc.aio.insecure_channel(f"localhost:{server.grpc.port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        await asyncio.gather(*(stub.ModelInfer(pair_request(2)) for _ in range(7)))
        for _ in range(3):
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.ModelInfer(pair_request(1, name_b="nope"))
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.ModelInfer(pb.ModelInferRequest(model_name="missing"))
        stats = (await stub.ModelStatistics(pb.ModelStatisticsRequest(name="pair"))).model_stats[0]
    samples = scrape(server.grpc.metrics_port)
    ok = {"model": "pair", "version": "1"}
    assert value(samples, "maas_inference_requests_total", **ok, code="OK") == 7
    assert value(samples, "maas_inference_requests_total", **ok, code="INVALID_ARGUMENT") == 3
    assert (
        value(samples, "maas_inference_requests_total", model="", version="", code="NOT_FOUND") == 1
    )
    assert value(samples, "maas_inference_request_duration_seconds_count", **ok) == 10
    assert value(samples, "maas_inference_queue_duration_seconds_count", **ok) == 7
    executions = value(samples, "maas_inference_batch_size_count", **ok)
    assert value(samples, "maas_inference_batch_size_sum", **ok) == 14  # 7 requests x 2 rows
    assert value(samples, "maas_inference_compute_duration_seconds_count", **ok) == executions
    assert value(samples, "maas_inference_inflight_requests", **ok) == 0
    assert value(samples, "maas_inference_queue_depth", **ok) == 0
    assert value(samples, "maas_inference_model_load_duration_seconds_count", model="pair") == 1
    rpc = "/inference.GRPCInferenceService/ModelInfer"
    assert value(samples, "maas_inference_grpc_requests_total", method=rpc, code="OK") == 7
    assert (
        value(samples, "maas_inference_grpc_requests_total", method=rpc, code="INVALID_ARGUMENT")
        == 3
    )
    # ModelStatistics (Triton's shape) agrees with the metrics.
    assert stats.inference_stats.success.count == 7
    assert stats.inference_stats.fail.count == 3
    assert stats.execution_count == executions
    assert stats.inference_count == 14
    assert sum(b.compute_infer.count for b in stats.batch_stats) == executions


async def test_registry_metrics_count_uploads_bytes_and_watchers(
    tmp_path: Path, test_models: Path
) -> None:
    from services.common.errors import InvalidArgument
    from services.registry.client import RegistryClient
    from services.registry.main import create_server
    from services.registry.settings import RegistrySettings

    settings = RegistrySettings(port=0, metrics_port=0, data_dir=tmp_path, no_auth=True)
    running = await create_server(settings)
    port = await running.start()
    model = test_models / "pair" / "1" / "model.onnx"
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    try:
        async with RegistryClient(f"localhost:{port}") as client:
            await client.upload("pair", model)
            await client.upload("pair", model)
            with pytest.raises(InvalidArgument):
                await client.upload("pair", bad)
            events = client.watch(None)
            watcher = asyncio.ensure_future(events.__anext__())
            await asyncio.sleep(0.3)
            samples = scrape(running.server.metrics_port)
            watcher.cancel()
    finally:
        await running.stop(0)
    assert value(samples, "maas_registry_uploads_total", result="ok") == 2
    assert value(samples, "maas_registry_uploads_total", result="rejected") == 1
    assert value(samples, "maas_registry_upload_bytes_total") == 2 * model.stat().st_size
    assert value(samples, "maas_registry_watch_subscribers") == 1
    rpc = "/maas.registry.v1.ModelRegistry/UploadVersion"
    assert value(samples, "maas_registry_grpc_requests_total", method=rpc, code="OK") == 2


async def test_gateway_metrics_count_requests_codes_and_rate_limits(
    server: InferenceServer, tmp_path: Path
) -> None:
    from services.common.tokens import hash_token
    from services.gateway.main import GatewayServer
    from services.gateway.settings import GatewaySettings

    keys = tmp_path / "keys.yaml"
    keys.write_text(
        f"keys:\n  - {{id: ci, sha256: {hash_token('k')}, rate_per_second: 0.001, burst: 4}}\n"
    )
    settings = GatewaySettings(
        port=0,
        metrics_port=0,
        http_port=0,
        grace_seconds=0,
        api_keys_file=str(keys),
        backends=f"localhost:{server.grpc.port}",
    )
    gateway = GatewayServer(settings)
    await gateway.start(ready_timeout=10)
    metadata = (("authorization", "Bearer k"),)
    try:
        async with grpc.aio.insecure_channel(f"localhost:{gateway.grpc.port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            for _ in range(3):
                await stub.ModelInfer(pair_request(1), metadata=metadata)
            with pytest.raises(grpc.aio.AioRpcError):  # the backend says INVALID_ARGUMENT
                await stub.ModelInfer(pair_request(1, name_b="nope"), metadata=metadata)
            for _ in range(2):  # the bucket (burst 4) is empty now
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.ModelInfer(pair_request(1), metadata=metadata)
                assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        samples = scrape(gateway.grpc.metrics_port)
    finally:
        await gateway.shutdown(0)
    labels = {"model": "pair", "version": "1", "code": "OK", "protocol": "grpc"}
    assert value(samples, "maas_gateway_requests_total", **labels) == 3
    assert (
        value(
            samples,
            "maas_gateway_requests_total",
            model="pair",
            version="",  # the backend refused it: no version answered
            code="INVALID_ARGUMENT",
            protocol="grpc",
        )
        == 1
    )
    assert (
        value(
            samples,
            "maas_gateway_requests_total",
            model="",  # refused before routing: no model label from client input
            version="",
            code="RESOURCE_EXHAUSTED",
            protocol="grpc",
        )
        == 2
    )
    assert (
        value(samples, "maas_gateway_rate_limited_requests_total", key="ci", protocol="grpc") == 2
    )
    assert (
        value(samples, "maas_gateway_request_duration_seconds_count", model="pair", protocol="grpc")
        == 4
    )
    assert value(samples, "maas_gateway_inflight_requests") == 0
    assert value(samples, "maas_gateway_backends", health="healthy") == 1
