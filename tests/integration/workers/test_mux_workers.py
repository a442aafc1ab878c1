"""A multiplexing gateway in front of maas-inference --workers 2 reaches both workers:
its backend_connections are distinct TCP connections, which SO_REUSEPORT spreads."""

from __future__ import annotations

import grpc

from services.common.workers import Supervisor
from services.gateway.main import GatewayServer
from services.gateway.settings import GatewaySettings
from tests.integration.workers.helpers import cnn_request, per_worker, samples, stub, wait_until

# Both workers get one of the streams but for a 2^-15 chance.
CONNECTIONS = 16


async def test_a_multiplexing_gateway_reaches_every_worker(
    inference_workers: Supervisor,
) -> None:
    port, metrics = inference_workers.bound["port"], inference_workers.metrics_port
    settings = GatewaySettings(
        host="localhost",
        port=0,
        metrics_port=0,
        http_port=0,
        grace_seconds=0,
        no_auth=True,
        backends=f"localhost:{port}",
        backend_mux=True,
        backend_connections=CONNECTIONS,
    )
    gateway = GatewayServer(settings)
    await gateway.start(ready_timeout=30)
    try:
        async with grpc.aio.insecure_channel(f"localhost:{gateway.grpc.port}") as channel:
            for _ in range(2 * CONNECTIONS):  # round the connections twice
                await stub(channel).ModelInfer(cnn_request(), timeout=30)
        mux = gateway.pool.backends[f"localhost:{port}"].mux
        assert mux is not None and all(s is not None and s.alive for s in mux.streams)
    finally:
        await gateway.shutdown(0)

    # A stream is counted by the worker's gRPC metrics once it ends. The gateway's own
    # unary calls (health, catalog) reach one worker on its one main channel; without
    # streams of its own, the other worker would count none.
    async def both() -> bool:
        calls = per_worker(await samples(metrics), "maas_worker_grpc_requests_total")
        return all(calls.get(w, 0) > 0 for w in ("0", "1"))

    await wait_until(both, timeout=30)
