"""maas-gateway --workers 2 with API keys and no Redis: a key's rate limit and its
max_streams_per_key hold for the two workers together (services/gateway/worker_limits.py),
not once per worker, and the streams of a worker killed with them open are freed by
its replacement."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest

from services.common.workers import SharedPort, Supervisor
from services.gateway.main import gateway_supervisor
from services.gateway.settings import GatewaySettings
from services.inference.main import InferenceServer
from tests.integration.conftest import StartInferenceAt
from tests.integration.workers.helpers import (
    cnn_request,
    connection,
    per_worker,
    samples,
    stub,
    wait_until,
)

MAX_CONNECTIONS = 64
BURST = 3
KEYS = f"""
keys:
  - {{id: limited, key: key-limited, rate_per_second: 0.001, burst: {BURST}}}
  - {{id: free, key: key-free}}
"""


def bearer(key: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {key}"),)


async def start_gateway(
    backend: InferenceServer, tmp_path: Path, started: list[Supervisor]
) -> Supervisor:
    keys = tmp_path / "keys.yaml"
    keys.write_text(KEYS)
    address = f"localhost:{backend.grpc.port}"
    settings = GatewaySettings(
        host="localhost",
        port=0,
        http_port=0,
        metrics_port=0,
        workers=2,
        backends=address,
        api_keys_file=str(keys),
        max_streams_per_key=1,
        grace_seconds=0,
    )
    argv = ["--backends", address, "--api-keys-file", str(keys)]
    supervisor = gateway_supervisor(
        settings, argv, [SharedPort("port", 0, None), SharedPort("http_port", 0, None)]
    )
    started.append(supervisor)
    await supervisor.start()
    return supervisor


async def one_per_worker(gateway: Supervisor) -> dict[str, grpc.aio.Channel]:
    """A connection to each worker, found by which worker's call count rose."""
    found: dict[str, grpc.aio.Channel] = {}
    spare: list[grpc.aio.Channel] = []
    for _ in range(MAX_CONNECTIONS):
        channel = connection(gateway.bound["port"])
        before = per_worker(await samples(gateway.metrics_port), "maas_worker_grpc_requests_total")
        await stub(channel).ModelInfer(cnn_request(), metadata=bearer("key-free"))
        after = per_worker(await samples(gateway.metrics_port), "maas_worker_grpc_requests_total")
        (worker,) = [w for w in after if after[w] != before.get(w, 0)]
        if worker in found:
            spare.append(channel)
        else:
            found[worker] = channel
        if len(found) == 2:
            for extra in spare:
                await extra.close()
            return found
    raise AssertionError(f"every connection landed on one worker: {sorted(found)}")


Started = tuple[Supervisor, dict[str, grpc.aio.Channel]]


@pytest.fixture
async def gateway_and_channels(
    start_inference_at: StartInferenceAt,
    make_repository: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Started]:
    monkeypatch.setenv("MAAS_GATEWAY_MAX_STREAMS_PER_KEY", "1")  # no flag: the workers' env
    backend = await start_inference_at(make_repository("cnn"))
    started: list[Supervisor] = []
    try:
        gateway = await start_gateway(backend, tmp_path, started)
        channels = await one_per_worker(gateway)
        yield gateway, channels
        for channel in channels.values():
            await channel.close()
    finally:
        for supervisor in started:
            await supervisor.shutdown(0)


async def test_a_keys_rate_limit_holds_for_both_workers_together(
    gateway_and_channels: Started,
) -> None:
    _, channels = gateway_and_channels
    a, b = stub(channels["0"]), stub(channels["1"])
    limited = bearer("key-limited")
    for target in (a, b, a):  # the burst, spent on both workers
        await target.ModelInfer(cnn_request(), metadata=limited)
    # Worker 1 alone would have 2 of its own 3 left; the key has none left anywhere.
    for target in (b, a):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await target.ModelInfer(cnn_request(), metadata=limited)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "API key 'limited' is over its rate limit" in (refused.value.details() or "")
    # The other key, without a rate, is not touched.
    await b.ModelInfer(cnn_request(), metadata=bearer("key-free"))


async def test_stream_slots_hold_for_both_workers_and_a_killed_workers_are_freed(
    gateway_and_channels: Started,
) -> None:
    gateway, channels = gateway_and_channels
    free = bearer("key-free")
    first = stub(channels["0"]).ModelStreamInfer(metadata=free, timeout=60)
    await first.write(cnn_request())
    assert (await first.read()).error_message == ""
    # The key's one slot is held on worker 0: worker 1 refuses a second stream.
    over = stub(channels["1"]).ModelStreamInfer(metadata=free, timeout=10)
    assert await over.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "across the gateway's workers: at most 1" in await over.details()
    # Worker 0 dies with the stream open; its replacement frees the slot.
    victim = gateway.statuses()[0]
    os.kill(victim.pid, signal.SIGKILL)
    assert await first.code() == grpc.StatusCode.UNAVAILABLE

    async def replaced() -> bool:
        status = gateway.statuses()[0]
        return status.serving and status.pid != victim.pid

    await wait_until(replaced)
    second = stub(channels["1"]).ModelStreamInfer(metadata=free, timeout=60)
    await second.write(cnn_request())
    assert (await second.read()).error_message == ""
    await second.done_writing()
    assert await second.code() == grpc.StatusCode.OK
