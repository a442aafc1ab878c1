"""Readiness per (backend, model, version) through real servers: subsets, failed models, Watch."""

from __future__ import annotations

import asyncio
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

from services.gateway.balancer import Health
from services.gateway.main import GatewayServer
from services.inference.main import InferenceServer
from tests.integration.gateway.conftest import (
    StartGateway,
    StartInference,
    backend_address,
    pair_request,
    until,
)

Connect = Callable[[GatewayServer], pb_grpc.GRPCInferenceServiceStub]


def repository(
    root: Path, test_models: Path, *, good: tuple[str, ...], broken: tuple[str, ...] = ()
) -> Path:
    """A repository with the `pair` graph under each good name, and a file that is no
    ONNX graph under each broken one (that model is UNAVAILABLE, the rest serve)."""
    for name in good + broken:
        target = root / name / "1"
        target.mkdir(parents=True)
        if name in good:
            shutil.copy(test_models / "pair" / "1" / "model.onnx", target / "model.onnx")
        else:
            (target / "model.onnx").write_bytes(b"not an onnx graph")
    return root


def request(model: str) -> pb.ModelInferRequest:
    message = pair_request()
    message.model_name = model
    return message


def served(server: InferenceServer, model: str) -> int:
    """Requests a backend answered for one model, by its own statistics."""
    return sum(m.stats.inference_count for m in server.manager.loaded() if m.name == model)


def retries(gateway: GatewayServer) -> float:
    return gateway.metrics_registry.get_sample_value("maas_gateway_retries_total") or 0.0


async def test_each_model_goes_only_to_the_backends_that_serve_it(
    tmp_path: Path,
    test_models: Path,
    start_inference: StartInference,
    start_gateway: StartGateway,
    connect: Connect,
) -> None:
    pairs = await start_inference(repository(tmp_path / "a", test_models, good=("pair",)))
    others = await start_inference(repository(tmp_path / "b", test_models, good=("other",)))
    gateway = await start_gateway(backends=f"{backend_address(pairs)},{backend_address(others)}")
    stub = connect(gateway)
    calls = [request("pair") for _ in range(60)] + [request("other") for _ in range(60)]
    await asyncio.gather(*(stub.ModelInfer(c, timeout=10) for c in calls))
    assert (served(pairs, "pair"), served(others, "other")) == (60, 60)
    assert retries(gateway) == 0
    # A model neither backend has is unknown at the gateway, without asking either.
    with_unknown = request("nope")
    try:
        await stub.ModelInfer(with_unknown, timeout=10)
        raise AssertionError("expected NOT_FOUND")
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.NOT_FOUND and "unknown model 'nope'" in str(
            exc.details()
        )


async def test_a_failed_model_does_not_take_its_backend_out_for_the_others(
    tmp_path: Path,
    test_models: Path,
    start_inference: StartInference,
    start_gateway: StartGateway,
    connect: Connect,
) -> None:
    # `other` failed to load on the first backend: UNAVAILABLE there, READY on the second.
    half = await start_inference(
        repository(tmp_path / "a", test_models, good=("pair",), broken=("other",))
    )
    whole = await start_inference(repository(tmp_path / "b", test_models, good=("pair", "other")))
    gateway = await start_gateway(backends=f"{backend_address(half)},{backend_address(whole)}")
    stub = connect(gateway)
    for _ in range(4):
        calls = [request("other") for _ in range(25)] + [request("pair") for _ in range(25)]
        await asyncio.gather(*(stub.ModelInfer(c, timeout=10) for c in calls))
    assert served(whole, "other") == 100
    assert served(half, "pair") > 20 and served(half, "pair") + served(whole, "pair") == 100
    assert gateway.pool.backends[backend_address(half)].state.health is Health.HEALTHY
    assert retries(gateway) == 0
    assert gateway.metrics_registry.get_sample_value("maas_gateway_backend_ejections_total") == 0


async def test_a_model_unloaded_on_one_backend_is_routed_around_through_health_watch(
    start_inference: StartInference, start_gateway: StartGateway, connect: Connect
) -> None:
    first, second = await start_inference(), await start_inference()
    gateway = await start_gateway(backends=f"{backend_address(first)},{backend_address(second)}")
    state = gateway.pool.backends[backend_address(first)].state
    stub = connect(gateway)
    async with grpc.aio.insecure_channel(backend_address(first)) as channel:
        # The inference server's per-model health can be watched (the gateway does).
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service="pair"), timeout=10
        )
        updates = watch.__aiter__()
        assert (await updates.__anext__()).status == health_pb2.HealthCheckResponse.SERVING
        direct = pb_grpc.GRPCInferenceServiceStub(channel)
        await direct.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="pair"))
        assert (await updates.__anext__()).status == health_pb2.HealthCheckResponse.NOT_SERVING
        watch.cancel()
        await until(lambda: not state.serves("pair", None))
        before = served(second, "pair")
        await asyncio.gather(*(stub.ModelInfer(pair_request(), timeout=10) for _ in range(40)))
        assert served(second, "pair") - before == 40 and retries(gateway) == 0
        # Loaded again: the Watch says SERVING, the gateway re-reads what it has.
        await direct.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="pair"))
        await until(lambda: state.serves("pair", None))
        await asyncio.gather(*(stub.ModelInfer(pair_request(), timeout=10) for _ in range(40)))
        assert served(first, "pair") > 0 and retries(gateway) == 0
    assert state.health is Health.HEALTHY


def metrics_page(port: int, path: str) -> int:
    """The status of a GET on the gateway's metrics port."""
    try:
        with urllib.request.urlopen(f"http://localhost:{port}{path}", timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


async def test_readyz_on_the_metrics_port_follows_the_backends_and_healthz_does_not(
    start_inference: StartInference, start_gateway: StartGateway
) -> None:
    # What Kubernetes probes over HTTPS when TLS is on (the chart's tlsProbes): readiness
    # must leave rotation without a healthy backend, liveness must not restart for it.
    backend = await start_inference()
    gateway = await start_gateway(backends=backend_address(backend))
    port = gateway.grpc.metrics_port

    async def status(path: str) -> int:
        return await asyncio.to_thread(metrics_page, port, path)

    assert (await status("/readyz"), await status("/healthz")) == (200, 200)
    await backend.shutdown(0)
    loop, end = asyncio.get_running_loop(), asyncio.get_running_loop().time() + 30
    while await status("/readyz") != 503:
        assert loop.time() < end, "/readyz still 200 with the only backend gone"
        await asyncio.sleep(0.05)
    assert gateway.app.ready() is False
    assert await status("/healthz") == 200
    await gateway.shutdown(0)
