"""GrpcServer.start() on a taken port raises PortInUse naming the setting, holding no port."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from services.common.server import GrpcServer, PortInUse
from services.registry.settings import RegistrySettings


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port the OS chose, held by a listening dual-stack socket."""
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::", 0))
        sock.listen()
        yield sock.getsockname()[1]


def bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        try:
            sock.bind(("::", port))
        except OSError:
            return False
        return True


async def test_taken_grpc_port_releases_the_metrics_port(taken_port: int) -> None:
    server = GrpcServer(
        RegistrySettings(port=taken_port, metrics_port=0),
        bindings=[],
        metrics_registry=CollectorRegistry(),
    )
    with pytest.raises(PortInUse) as caught:
        await server.start()
    assert (caught.value.port, caught.value.flag, caught.value.env) == (
        taken_port,
        "--port",
        "MAAS_REGISTRY_PORT",
    )
    assert server.metrics_port and bindable(server.metrics_port)


async def test_taken_metrics_port(taken_port: int) -> None:
    server = GrpcServer(
        RegistrySettings(port=0, metrics_port=taken_port),
        bindings=[],
        metrics_registry=CollectorRegistry(),
    )
    with pytest.raises(PortInUse) as caught:
        await server.start()
    assert str(caught.value) == (
        f"port {taken_port} is in use (change it with --metrics-port or MAAS_REGISTRY_METRICS_PORT)"
    )


async def test_a_stop_asked_for_while_starting_is_kept() -> None:
    """SIGTERM between the handlers' install and the end of start() (a `docker stop`
    right after `docker run`) must not be lost: wait() then drains and returns, where
    it used to serve on until SIGKILL."""
    server = GrpcServer(RegistrySettings(port=0, metrics_port=0, grace_seconds=1), bindings=[])
    server.request_shutdown()  # what the SIGTERM handler calls
    port = await server.start()
    assert port
    await asyncio.wait_for(server.wait(), timeout=30)
    assert bindable(port)
