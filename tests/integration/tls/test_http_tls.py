"""TLS on the gateway's HTTP listener: HTTPS with the CA, plaintext refused, mutual TLS."""

from __future__ import annotations

import asyncio
import http.client
import json
import ssl

import pytest

from tests.integration.tls.conftest import StartGateway
from tests.tlscerts import Ca, Issued


def _get(port: int, path: str, context: ssl.SSLContext | None) -> tuple[int, bytes]:
    """One GET over a new connection: HTTPS with `context`, else plain HTTP."""
    if context is None:
        conn: http.client.HTTPConnection = http.client.HTTPConnection("localhost", port, timeout=10)
    else:
        conn = http.client.HTTPSConnection("localhost", port, timeout=10, context=context)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _trusting(ca: Ca, client: Issued | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca.cert))
    if client is not None:
        context.load_cert_chain(str(client.cert), str(client.key))
    return context


async def test_https_with_the_ca_is_served_and_plain_http_refused(
    start_gateway: StartGateway, ca: Ca, server_cert: Issued
) -> None:
    gateway = await start_gateway(tls_cert=str(server_cert.cert), tls_key=str(server_cert.key))
    status, body = await asyncio.to_thread(
        _get, gateway.http_port, "/v2/models/pair", _trusting(ca)
    )
    assert status == 200
    assert json.loads(body)["name"] == "pair"

    with pytest.raises((OSError, http.client.HTTPException)):
        await asyncio.to_thread(_get, gateway.http_port, "/v2/health/live", None)


async def test_https_under_mutual_tls_wants_a_certificate_the_ca_signed(
    start_gateway: StartGateway, ca: Ca, foreign_ca: Ca, server_cert: Issued
) -> None:
    gateway = await start_gateway(
        tls_cert=str(server_cert.cert),
        tls_key=str(server_cert.key),
        tls_client_ca=str(ca.cert),
    )
    trusted = ca.issue("client", "client", client=True)
    status, _ = await asyncio.to_thread(
        _get, gateway.http_port, "/v2/health/live", _trusting(ca, trusted)
    )
    assert status == 200
    foreign = foreign_ca.issue("stranger", "stranger", client=True)
    for context in (_trusting(ca), _trusting(ca, foreign)):
        # TLS 1.3: the refusal can come with the first read rather than the handshake.
        with pytest.raises((ssl.SSLError, OSError, http.client.HTTPException)):
            await asyncio.to_thread(_get, gateway.http_port, "/v2/health/live", context)


async def test_the_metrics_port_serves_https_from_the_same_files(
    start_gateway: StartGateway, ca: Ca, server_cert: Issued
) -> None:
    gateway = await start_gateway(
        tls_cert=str(server_cert.cert),
        tls_key=str(server_cert.key),
        tls_client_ca=str(ca.cert),  # not asked of scrapers and probes
    )
    port = gateway.grpc.metrics_port
    status, _ = await asyncio.to_thread(_get, port, "/healthz", _trusting(ca))
    assert status == 200
    with pytest.raises((OSError, http.client.HTTPException)):
        await asyncio.to_thread(_get, port, "/healthz", None)


async def test_a_refused_handshake_is_logged_with_its_reason(
    start_gateway: StartGateway, ca: Ca, server_cert: Issued, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = await start_gateway(
        tls_cert=str(server_cert.cert),
        tls_key=str(server_cert.key),
        tls_client_ca=str(ca.cert),
    )
    caplog.clear()
    with pytest.raises((ssl.SSLError, OSError, http.client.HTTPException)):
        await asyncio.to_thread(_get, gateway.http_port, "/v2/health/live", _trusting(ca))
    loop = asyncio.get_running_loop()
    end = loop.time() + 10
    while not any("TLS handshake refused" in r.getMessage() for r in caplog.records):
        assert loop.time() < end, "no line for the refused handshake"
        await asyncio.sleep(0.02)
    line = next(r.getMessage() for r in caplog.records if "handshake refused" in r.getMessage())
    assert "CERTIFICATE" in line
    assert "PRIVATE KEY" not in caplog.text
