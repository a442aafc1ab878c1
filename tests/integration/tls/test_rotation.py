"""Certificate rotation without restart: new connections get the new certificate,
connections already open keep working."""

from __future__ import annotations

import asyncio
import http.client
import os
import ssl
from pathlib import Path

import grpc
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

from tests.integration.tls.conftest import StartGateway, pair_request, peer_serial
from tests.tlscerts import Ca, Issued


def _rotate(ca: Ca, live: Issued, stem: str) -> int:
    """Replace the live cert and key files (each atomically) with a new pair; its serial."""
    fresh = ca.issue(stem)
    for source, target in ((fresh.key, live.key), (fresh.cert, live.cert)):
        staged = target.with_suffix(".new")
        staged.write_bytes(Path(source).read_bytes())
        os.replace(staged, target)
    return fresh.serial


async def test_grpc_rotation(start_gateway: StartGateway, ca: Ca, server_cert: Issued) -> None:
    gateway = await start_gateway(tls_cert=str(server_cert.cert), tls_key=str(server_cert.key))
    port = gateway.grpc.port
    assert await asyncio.to_thread(peer_serial, port, ca) == server_cert.serial
    credentials = grpc.ssl_channel_credentials(root_certificates=ca.pem())
    async with grpc.aio.secure_channel(f"localhost:{port}", credentials) as old:
        stub = pb_grpc.GRPCInferenceServiceStub(old)
        await stub.ModelInfer(pair_request(), timeout=10)

        serial = _rotate(ca, server_cert, "rotated")
        assert serial != server_cert.serial
        assert await asyncio.to_thread(peer_serial, port, ca) == serial
        await stub.ModelInfer(pair_request(), timeout=10)  # the old connection still serves
    credentials = grpc.ssl_channel_credentials(root_certificates=ca.pem())
    async with grpc.aio.secure_channel(f"localhost:{port}", credentials) as new:
        await pb_grpc.GRPCInferenceServiceStub(new).ModelInfer(pair_request(), timeout=10)


async def test_grpc_keeps_the_last_good_certificate_when_a_bad_one_lands(
    start_gateway: StartGateway, ca: Ca, server_cert: Issued
) -> None:
    gateway = await start_gateway(tls_cert=str(server_cert.cert), tls_key=str(server_cert.key))
    other = ca.issue("other")
    staged = server_cert.key.with_suffix(".new")
    staged.write_bytes(other.key.read_bytes())
    os.replace(staged, server_cert.key)  # a key that does not match the certificate
    assert await asyncio.to_thread(peer_serial, gateway.grpc.port, ca) == server_cert.serial


async def test_http_rotation(start_gateway: StartGateway, ca: Ca, server_cert: Issued) -> None:
    gateway = await start_gateway(tls_cert=str(server_cert.cert), tls_key=str(server_cert.key))
    port = gateway.http_port
    context = ssl.create_default_context(cafile=str(ca.cert))
    old = http.client.HTTPSConnection("localhost", port, timeout=10, context=context)

    def get() -> int:
        old.request("GET", "/v2/health/live")
        response = old.getresponse()
        response.read()
        return response.status

    try:
        assert await asyncio.to_thread(get) == 200
        assert await asyncio.to_thread(peer_serial, port, ca, "http/1.1") == server_cert.serial
        serial = _rotate(ca, server_cert, "rotated")
        assert await asyncio.to_thread(peer_serial, port, ca, "http/1.1") == serial
        sock = old.sock
        assert await asyncio.to_thread(get) == 200  # the old connection, still open
        assert old.sock is sock
    finally:
        old.close()
