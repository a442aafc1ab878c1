"""The metrics port's /healthz: 200 over HTTP, and over HTTPS with the service's cert/key."""

from __future__ import annotations

import asyncio
import datetime
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client import CollectorRegistry, Counter

from services.common.metrics import MetricsServer
from services.inference.main import InferenceServer
from services.inference.settings import InferenceSettings
from tests.tlscerts import Ca


def self_signed(directory: Path) -> tuple[str, str]:
    """A certificate for localhost/127.0.0.1 and its key, written to directory."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


def registry() -> CollectorRegistry:
    reg = CollectorRegistry()
    Counter("maas_test_model_requests_total", "Per model.", ["model"], registry=reg).labels(
        "secret-model"
    ).inc()
    return reg


def get(url: str, context: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10, context=context) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def plain() -> Iterator[MetricsServer]:
    server = MetricsServer(registry(), "127.0.0.1", 0)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def tls(tmp_path: Path) -> Iterator[tuple[MetricsServer, str]]:
    cert, key = self_signed(tmp_path)
    server = MetricsServer(registry(), "127.0.0.1", 0, tls_cert=cert, tls_key=key)
    server.start()
    yield server, cert
    server.stop()


def test_healthz_answers_200_and_names_no_model(plain: MetricsServer) -> None:
    status, body = get(f"http://127.0.0.1:{plain.port}/healthz")
    assert (status, body) == (200, b"ok\n")
    assert b"secret-model" not in body


def test_healthz_and_metrics_over_https(tls: tuple[MetricsServer, str]) -> None:
    server, cert = tls
    context = ssl.create_default_context(cafile=cert)
    status, body = get(f"https://localhost:{server.port}/healthz", context)
    assert (status, body) == (200, b"ok\n")
    status, body = get(f"https://localhost:{server.port}/metrics", context)
    assert status == 200 and b"maas_test_model_requests_total" in body


def test_plaintext_gets_nothing_from_a_tls_listener(tls: tuple[MetricsServer, str]) -> None:
    server, _ = tls
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        get(f"http://127.0.0.1:{server.port}/healthz")
    # the server survives the plaintext client and still answers over TLS
    context = ssl.create_default_context(cafile=tls[1])
    assert get(f"https://localhost:{server.port}/healthz", context)[0] == 200


def test_cert_without_key_is_refused() -> None:
    with pytest.raises(ValueError, match="both tls_cert and tls_key"):
        MetricsServer(registry(), "127.0.0.1", 0, tls_cert="/nowhere.crt")


async def test_a_tls_service_serves_healthz_over_https_without_a_client_cert(
    tmp_path: Path, test_models: Path
) -> None:
    """A real inference server with mutual TLS on gRPC: its metrics port is HTTPS from
    the same files and asks for no client certificate (probes and scrapers have none)."""
    ca = Ca(tmp_path / "ca")
    cert = ca.issue("server")
    server = InferenceServer(
        InferenceSettings(
            port=0,
            metrics_port=0,
            host="localhost",
            model_repository=str(test_models),
            grace_seconds=0,
            tls_cert=str(cert.cert),
            tls_key=str(cert.key),
            tls_client_ca=str(ca.cert),
        )
    )
    await server.start()
    try:
        port = server.grpc.metrics_port
        context = ssl.create_default_context(cafile=str(ca.cert))
        status, body = await asyncio.to_thread(get, f"https://localhost:{port}/healthz", context)
        assert (status, body) == (200, b"ok\n")
        status, body = await asyncio.to_thread(get, f"https://localhost:{port}/metrics", context)
        assert status == 200 and b"maas_inference" in body
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            await asyncio.to_thread(get, f"http://localhost:{port}/healthz")
    finally:
        await server.shutdown(0)


def test_healthz_is_503_while_the_service_does_not_serve() -> None:
    """The service's own status decides: before it serves and once it drains, a probe
    sees 503 (a readiness probe then takes the pod out of rotation)."""
    serving = False
    server = MetricsServer(registry(), "127.0.0.1", 0, ready=lambda: serving)
    server.start()
    try:
        url = f"http://127.0.0.1:{server.port}/healthz"
        assert get(url) == (503, b"not serving\n")
        serving = True
        assert get(url) == (200, b"ok\n")
        serving = False
        assert get(url) == (503, b"not serving\n")
    finally:
        server.stop()
