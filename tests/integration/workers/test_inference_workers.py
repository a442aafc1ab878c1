"""maas-inference --workers 2: connections spread over both workers, the merged
metrics count every request once, readiness is the workers' together, and SIGTERM
drains every worker's calls in flight."""

from __future__ import annotations

import asyncio
import os
import signal

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from maas_proto.inference import grpc_predict_v2_pb2 as pb

from services.common.workers import Supervisor
from tests.integration.workers.helpers import (
    HELD_SECONDS,
    cnn_request,
    connection,
    per_worker,
    samples,
    scrape,
    stub,
    total,
    wait_until,
)

MAX_CONNECTIONS = 64  # both workers get one of them, but for a 2^-63 chance


async def test_connections_spread_and_every_request_counts_once(
    inference_workers: Supervisor,
) -> None:
    port, metrics = inference_workers.bound["port"], inference_workers.metrics_port
    channels: list[grpc.aio.Channel] = []
    try:
        # New connections, one call each, until both workers have answered one.
        while True:
            channel = connection(port)
            channels.append(channel)
            await stub(channel).ModelInfer(cnn_request())
            calls = per_worker(await samples(metrics), "maas_worker_grpc_requests_total")
            if all(calls.get(w, 0) > 0 for w in ("0", "1")):
                break
            assert len(channels) < MAX_CONNECTIONS, f"every connection on one worker: {calls}"
        # Then a known number more over all of them.
        more = 10
        for _ in range(more):
            await asyncio.gather(*(stub(c).ModelInfer(cnn_request()) for c in channels))
        sent = len(channels) * (1 + more)
        found = await samples(metrics)
        assert total(found, "maas_inference_requests_total", model="cnn", code="OK") == sent
        assert total(found, "maas_inference_request_duration_seconds_count", model="cnn") == sent
        # The per-worker figures add up to the merged counter: nothing counted twice.
        grpc_calls = total(found, "maas_inference_grpc_requests_total")
        per = per_worker(found, "maas_worker_grpc_requests_total")
        assert sum(per.values()) == grpc_calls >= sent
        assert per_worker(found, "maas_worker_up") == {"0": 1.0, "1": 1.0}
        pids = per_worker(found, "maas_worker_pid")
        assert len(set(pids.values())) == 2
        assert {int(p) for p in pids.values()} == {s.pid for s in inference_workers.statuses()}
        # Gauges stay per worker, each worker's series once.
        inflight = per_worker(
            {k: v for k, v in found.items() if dict(k[1]).get("model") == "cnn"},
            "maas_inference_inflight_requests",
        )
        assert set(inflight) == {"0", "1"}
    finally:
        for channel in channels:
            await channel.close()


async def test_readiness_is_every_workers(inference_workers: Supervisor) -> None:
    port, metrics = inference_workers.bound["port"], inference_workers.metrics_port
    assert await scrape(metrics, "/healthz") == (200, "ok\n")
    found = await samples(metrics)
    assert total(found, "maas_model_ready", model="cnn") == 1.0
    assert total(found, "maas_model_ready", model="slow") == 1.0
    channels = [connection(port) for _ in range(8)]
    try:
        for channel in channels:
            ready = await stub(channel).ModelReady(pb.ModelReadyRequest(name="cnn"))
            assert ready.ready
            health = health_pb2_grpc.HealthStub(channel)
            status = await health.Check(health_pb2.HealthCheckRequest(service="cnn"))
            assert status.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        for channel in channels:
            await channel.close()


async def test_a_killed_worker_is_started_again(inference_workers: Supervisor) -> None:
    metrics = inference_workers.metrics_port
    victim = inference_workers.statuses()[0]
    os.kill(victim.pid, signal.SIGKILL)

    async def back() -> bool:
        status = inference_workers.statuses()[0]
        return status.serving and status.pid != victim.pid

    await wait_until(back)
    found = await samples(metrics)
    assert per_worker(found, "maas_worker_restarts_total")["0"] == 1.0
    assert per_worker(found, "maas_worker_up") == {"0": 1.0, "1": 1.0}
    assert await scrape(metrics, "/healthz") == (200, "ok\n")
    async with connection(inference_workers.bound["port"]) as channel:
        await stub(channel).ModelInfer(cnn_request())


async def test_sigterm_drains_every_worker(inference_workers: Supervisor) -> None:
    port, metrics = inference_workers.bound["port"], inference_workers.metrics_port
    channels = [connection(port) for _ in range(16)]
    try:
        held = cnn_request()
        held.model_name = "held"
        calls = [asyncio.ensure_future(stub(c).ModelInfer(held)) for c in channels]

        async def all_held() -> bool:
            # Every call waits in its worker's batcher (HELD_SECONDS) and both have some.
            found = await samples(metrics)
            per = {
                dict(labels)["worker"]: value
                for (name, labels), value in found.items()
                if name == "maas_inference_inflight_requests" and dict(labels)["model"] == "held"
            }
            return sum(per.values()) == len(calls) and all(per.get(w) for w in "01")

        await wait_until(all_held, timeout=HELD_SECONDS)
        assert not any(call.done() for call in calls)
        pids = [s.pid for s in inference_workers.statuses()]
        inference_workers.request_shutdown()
        # 0: every worker exited 0, after its own graceful drain.
        assert await inference_workers.wait() == 0
        responses = await asyncio.gather(*calls)
        assert all(r.model_name == "held" for r in responses)
        for pid in pids:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                continue
            raise AssertionError(f"worker {pid} still running")
    finally:
        for channel in channels:
            await channel.close()
