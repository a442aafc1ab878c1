"""maas-gateway --workers 2 in front of a backend: calls over several connections
succeed on both workers, the HTTP port is shared too, and SIGTERM drains."""

from __future__ import annotations

import asyncio
import shutil
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

from services.common.workers import SharedPort, Supervisor
from services.gateway.settings import GatewaySettings
from services.inference.main import InferenceServer
from tests.integration.conftest import StartInferenceAt
from tests.integration.workers.helpers import (
    StartSupervisor,
    cnn_request,
    connection,
    per_worker,
    samples,
    scrape,
    slow_request,
    stub,
    total,
    wait_until,
)

MAX_CONNECTIONS = 64


async def gateway_workers(
    start: StartSupervisor, backend: InferenceServer, tmp_path: Path
) -> Supervisor:
    address = f"localhost:{backend.grpc.port}"
    settings = GatewaySettings(
        host="localhost",
        port=0,
        http_port=0,
        metrics_port=0,
        workers=2,
        backends=address,
        no_auth=True,
        grace_seconds=30,
        port_file=str(tmp_path / "port"),
        http_port_file=str(tmp_path / "http-port"),
    )
    argv = ["--backends", address, "--no-auth", "--grace-seconds", "30"]
    ports = [
        SharedPort("port", 0, settings.port_file),
        SharedPort("http_port", 0, settings.http_port_file),
    ]
    return await start("gateway", settings, argv, ports)


async def backend_at(
    start: StartInferenceAt, make_repository: Callable[..., Path], slow_model: Path
) -> InferenceServer:
    """An inference backend with `cnn` and `slow` (SlowSum, unbatched)."""
    repository = make_repository("cnn")
    (repository / "slow" / "1").mkdir(parents=True)
    shutil.copy(slow_model, repository / "slow" / "1" / "model.onnx")
    (repository / "slow" / "config.yaml").write_text(
        "dynamic_batching: {enabled: false, max_batch_size: 2048}"
    )
    return await start(repository)


async def test_gateway_workers_share_both_ports(
    start_supervisor: StartSupervisor,
    start_inference_at: StartInferenceAt,
    make_repository: Callable[..., Path],
    slow_model: Path,
    tmp_path: Path,
) -> None:
    backend = await backend_at(start_inference_at, make_repository, slow_model)
    gateway = await gateway_workers(start_supervisor, backend, tmp_path)
    port, metrics = gateway.bound["port"], gateway.metrics_port
    assert int((tmp_path / "port").read_text()) == port
    assert int((tmp_path / "http-port").read_text()) == gateway.bound["http_port"]
    channels = []
    try:
        while True:
            channel = connection(port)
            channels.append(channel)
            await stub(channel).ModelInfer(cnn_request())
            calls = per_worker(await samples(metrics), "maas_worker_grpc_requests_total")
            if all(calls.get(w, 0) > 0 for w in ("0", "1")):
                break
            assert len(channels) < MAX_CONNECTIONS, f"every connection on one worker: {calls}"
        for _ in range(5):
            await asyncio.gather(*(stub(c).ModelInfer(cnn_request()) for c in channels))
        sent = 6 * len(channels)
        found = await samples(metrics)
        infer = sum(
            value
            for (name, labels), value in found.items()
            if name == "maas_gateway_grpc_requests_total"
            and dict(labels)["method"].endswith("/ModelInfer")
            and dict(labels)["code"] == "OK"
        )
        assert infer == sent
        per = per_worker(found, "maas_worker_grpc_requests_total")
        assert sum(per.values()) == total(found, "maas_gateway_grpc_requests_total")
    finally:
        for channel in channels:
            await channel.close()

    def ready() -> int:
        url = f"http://localhost:{gateway.bound['http_port']}/v2/health/ready"
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status)

    for _ in range(8):  # each a new connection: whichever worker takes it answers
        assert await asyncio.to_thread(ready) == 200


async def test_sigterm_drains_every_gateway_worker(
    start_supervisor: StartSupervisor,
    start_inference_at: StartInferenceAt,
    make_repository: Callable[..., Path],
    slow_model: Path,
    tmp_path: Path,
) -> None:
    backend = await backend_at(start_inference_at, make_repository, slow_model)
    gateway = await gateway_workers(start_supervisor, backend, tmp_path)
    channels = [connection(gateway.bound["port"]) for _ in range(16)]
    try:
        calls = [asyncio.ensure_future(stub(c).ModelInfer(slow_request())) for c in channels]

        async def at_backend() -> bool:
            # Every call through a gateway worker to the backend, or done (counted
            # first, so none twice): none is still on its way in at SIGTERM.
            done = sum(call.done() for call in calls)
            value = backend.metrics_registry.get_sample_value(
                "maas_inference_inflight_requests", {"model": "slow", "version": "1"}
            )
            return done + (value or 0) >= len(calls)

        await wait_until(at_backend)
        gateway.request_shutdown()
        assert await gateway.wait() == 0
        responses = await asyncio.gather(*calls)
        assert all(r.model_name == "slow" for r in responses)
    finally:
        for channel in channels:
            await channel.close()


async def test_a_worker_that_fails_before_serving_stops_the_supervisor() -> None:
    # No backends: each worker stops at once with its reason; the supervisor with 1.
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.gateway.main", "--workers", "2", "--no-auth",
        "--port", "0", "--http-port", "0", "--metrics-port", "0",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 1
    text = err.decode()
    assert "no backends" in text
    assert "exited with status 1 before serving" in text


async def test_readyz_is_every_workers_and_follows_the_backends(
    start_supervisor: StartSupervisor,
    start_inference_at: StartInferenceAt,
    make_repository: Callable[..., Path],
    slow_model: Path,
    tmp_path: Path,
) -> None:
    backend = await backend_at(start_inference_at, make_repository, slow_model)
    gateway = await gateway_workers(start_supervisor, backend, tmp_path)
    metrics = gateway.metrics_port
    assert await scrape(metrics, "/readyz") == (200, "ok\n")
    await backend.shutdown(0)

    async def out_of_rotation() -> bool:
        return (await scrape(metrics, "/readyz"))[0] == 503

    # Each worker ejects the backend gone idle; the supervisor's /readyz follows them,
    # while /healthz (liveness: every worker up) stays 200.
    await wait_until(out_of_rotation)
    assert await scrape(metrics, "/healthz") == (200, "ok\n")
