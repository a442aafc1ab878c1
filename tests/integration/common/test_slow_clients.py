"""Slowloris: idle and incomplete connections are closed, and /metrics spends no thread each.

Before issue B, item 6, 300 idle connections stayed open on every port (grpc core's
defaults: no idle limit, a 120 s handshake timeout), and the metrics port grew to
210 threads for 200 idle connections (prometheus_client serves a thread each).
"""

from __future__ import annotations

import asyncio
import threading
import urllib.request
from collections.abc import AsyncIterator

import h2.config
import h2.connection
import h2.events
import pytest
from prometheus_client import CollectorRegistry, Counter

from services.common.metrics import MetricsServer
from services.common.server import GrpcServer
from services.registry.settings import RegistrySettings

TIMEOUT = 0.5  # the server's idle and handshake timeouts in these tests
WAIT = 15.0  # how long a test waits for the server to close a connection


@pytest.fixture
async def server() -> AsyncIterator[GrpcServer]:
    settings = RegistrySettings(
        port=0,
        metrics_port=0,
        max_connection_idle_seconds=TIMEOUT,
        handshake_timeout_seconds=TIMEOUT,
    )
    server = GrpcServer(settings, bindings=[], metrics_registry=CollectorRegistry())
    await server.start()
    yield server
    await server.shutdown(0)


async def closed_by_server(reader: asyncio.StreamReader, seen: list[bytes]) -> None:
    """Return once the server closes the connection, keeping what it sent."""
    while data := await reader.read(65536):
        seen.append(data)


async def test_an_idle_http2_connection_gets_goaway(server: GrpcServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    writer.write(conn.data_to_send())
    seen: list[bytes] = []
    try:
        await asyncio.wait_for(closed_by_server(reader, seen), WAIT)
    finally:
        writer.close()
    events = conn.receive_data(b"".join(seen))
    assert any(isinstance(e, h2.events.ConnectionTerminated) for e in events), events


@pytest.mark.parametrize("sent", [b"", b"PRI * HTTP/2.0\r\n"])
async def test_a_connection_that_never_completes_http2_is_closed(
    server: GrpcServer, sent: bytes
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(sent)
    try:
        await asyncio.wait_for(closed_by_server(reader, []), WAIT)
    except ConnectionResetError:
        pass  # closed as well
    finally:
        writer.close()


def scrape(port: int) -> bytes:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()


async def test_idle_metrics_connections_cost_no_threads_and_are_dropped() -> None:
    registry = CollectorRegistry()
    Counter("probe_total", "A counter to find on the page.", registry=registry).inc()
    metrics = MetricsServer(registry, "::", 0, timeout=TIMEOUT)
    port = metrics.start()
    before = threading.active_count()
    idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(200)]
    try:
        for _, writer in idle[:100]:
            writer.write(b"GET /metrics HTTP/1.1\r\n")  # and never the rest
        page = await asyncio.to_thread(scrape, port)
        assert b"probe_total 1.0" in page
        assert threading.active_count() <= before + 1  # the scrape's own thread
        # Every idle connection is closed by the server, within its timeout.
        await asyncio.wait_for(
            asyncio.gather(*(closed_by_server(reader, []) for reader, _ in idle)), WAIT
        )
    finally:
        for _, writer in idle:
            writer.close()
        metrics.stop()
