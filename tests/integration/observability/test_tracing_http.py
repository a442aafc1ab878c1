"""W3C trace context on the gateway's HTTP port continues the caller's trace, as on gRPC:
the gateway's HTTP server span is the child of the caller's span, and the backend's
span sits under it (issue C). Exported over OTLP to a real receiver."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.integration.observability.test_tracing import ancestors, by_id, otel_env, traceparent
from tests.otlp import Receiver, Span
from tests.servers import ServiceProcess


async def model_ready(http: aiohttp.ClientSession, url: str, timeout: float = 30.0) -> None:
    """Poll readiness until 200, within `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        async with http.get(url) as response:
            if response.status == 200:
                return
        if loop.time() > deadline:
            raise AssertionError(f"{url} not ready within {timeout} s: {response.status}")
        await asyncio.sleep(0.05)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.stop()


async def test_http_requests_continue_the_callers_trace(
    receiver: Receiver, tmp_path: Path, test_models: Path
) -> None:
    endpoint = receiver.start()
    inference = ServiceProcess(
        "inference",
        ["--model-repository", str(test_models)],
        tmp_path,
        env=otel_env(endpoint, "maas-inference"),
    )
    processes = [inference]
    try:
        gateway = ServiceProcess(
            "gateway",
            ["--backends", inference.address, "--no-auth"],
            tmp_path,
            env=otel_env(endpoint, "maas-gateway"),
        )
        processes.append(gateway)
        trace_id, client_span, header = traceparent()
        async with aiohttp.ClientSession() as http:
            base = f"http://localhost:{gateway.http_port}/v2/models/pair"
            # The gateway learns what the backend has from its catalog: wait until it has
            # `pair` ready (the backend may still be loading when the gateway starts).
            await model_ready(http, f"{base}/ready")
            url = f"{base}/config"
            async with http.get(url, headers={"traceparent": header}) as response:
                assert response.status == 200, await response.text()

        def complete(spans: list[Span]) -> bool:
            ours = [s for s in spans if s.trace_id == trace_id]
            return {s.service for s in ours} >= {"maas-gateway", "maas-inference"}

        spans = receiver.wait_for(complete, timeout=30)
    finally:
        for process in reversed(processes):
            process.stop()

    ours = [s for s in spans if s.trace_id == trace_id]
    index = by_id(ours)
    server = next(s for s in ours if s.service == "maas-gateway" and s.parent_id == client_span)
    assert server.name == "GET /v2/models/{model}/config"
    assert server.attributes["http.response.status_code"] == 200
    backend = next(
        s for s in ours if s.service == "maas-inference" and s.name.endswith("/ModelConfig")
    )
    assert server in ancestors(backend, index)
