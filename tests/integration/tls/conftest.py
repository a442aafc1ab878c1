"""TLS fixtures: a CA and certificates in tmp_path, and TLS services on port 0.

The gateway's hops to inference stay plaintext here: these tests are about the
listeners (server side); the client side has its own tests.
"""

from __future__ import annotations

import shutil
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from maas_proto.inference import grpc_predict_v2_pb2 as pb

from services.gateway.main import GatewayServer
from services.gateway.settings import GatewaySettings
from services.inference.main import InferenceServer
from services.inference.settings import InferenceSettings
from tests.tlscerts import Ca, Issued

StartGateway = Callable[..., Awaitable[GatewayServer]]


@pytest.fixture
def ca(tmp_path: Path) -> Ca:
    return Ca(tmp_path / "ca")


@pytest.fixture
def foreign_ca(tmp_path: Path) -> Ca:
    """A CA the servers do not trust."""
    return Ca(tmp_path / "foreign", name="foreign CA")


@pytest.fixture
def server_cert(ca: Ca, tmp_path: Path) -> Issued:
    """A localhost certificate, copied to the paths the server is given (rotated in place)."""
    issued = ca.issue("server")
    live = tmp_path / "live"
    live.mkdir()
    shutil.copy(issued.cert, live / "tls.crt")
    shutil.copy(issued.key, live / "tls.key")
    return Issued(live / "tls.crt", live / "tls.key", issued.serial)


@pytest.fixture
async def backend(test_models: Path) -> AsyncIterator[InferenceServer]:
    """A plaintext inference server over the test models."""
    server = InferenceServer(
        InferenceSettings(
            port=0,
            metrics_port=0,
            host="localhost",
            model_repository=str(test_models),
            grace_seconds=0,
        )
    )
    await server.start()
    yield server
    await server.shutdown(0)


@pytest.fixture
async def start_gateway(backend: InferenceServer) -> AsyncIterator[StartGateway]:
    """Start gateways in front of `backend` with settings overrides (the tls_* ones)."""
    started: list[GatewayServer] = []

    async def start(**overrides: Any) -> GatewayServer:
        values: dict[str, Any] = {
            "port": 0,
            "metrics_port": 0,
            "http_port": 0,
            "host": "localhost",
            "grace_seconds": 0,
            "no_auth": True,
            "backends": f"localhost:{backend.grpc.port}",
        }
        values.update(overrides)
        server = GatewayServer(GatewaySettings(**values))
        await server.start(ready_timeout=10)
        started.append(server)
        return server

    yield start
    for server in started:
        await server.shutdown(0)


def pair_request() -> pb.ModelInferRequest:
    """A `pair` request with a = 1..4 and b = 1."""
    request = pb.ModelInferRequest(model_name="pair")
    for name in ("a", "b"):
        request.inputs.add(name=name, datatype="FP32", shape=[1, 4])
    request.raw_input_contents.extend(
        [np.arange(1, 5, dtype=np.float32).tobytes(), np.ones(4, np.float32).tobytes()]
    )
    return request


def peer_serial(port: int, ca: Ca, alpn: str = "h2") -> int:
    """The serial of the certificate a new TLS connection to localhost:port is shown."""
    import socket

    from tests.tlscerts import serial_of

    context = ssl.create_default_context(cafile=str(ca.cert))
    context.set_alpn_protocols([alpn])
    with socket.create_connection(("localhost", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return serial_of(der)
