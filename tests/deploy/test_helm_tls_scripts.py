"""The chart's seed-Job wait and `helm test` scripts over (mutual) TLS, as tls.enabled
runs them: --ca, --cert/--key, --server-name, against a real TLS gRPC server."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from test_chart_scripts import API_KEY, FakeInference, run_script

SERVER_NAME = "internal.maas.serving.svc"


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def issue(directory: Path) -> dict[str, Path]:
    """A CA, a server certificate for SERVER_NAME and a client certificate, as files."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("maas test CA"))
        .issuer_name(_name("maas test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    files = {"ca": directory / "ca.crt"}
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for role, usage in (
        ("server", ExtendedKeyUsageOID.SERVER_AUTH),
        ("client", ExtendedKeyUsageOID.CLIENT_AUTH),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(f"maas {role}"))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(SERVER_NAME)]), False)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        files[f"{role}.crt"] = directory / f"{role}.crt"
        files[f"{role}.key"] = directory / f"{role}.key"
        files[f"{role}.crt"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files[f"{role}.key"].write_bytes(_pem_key(key))
    return files


@pytest.fixture(scope="module")
def mtls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, Path]]]:
    """A stand-in gateway that requires a client certificate signed by the CA."""
    files = issue(tmp_path_factory.mktemp("tls"))
    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(FakeInference(), srv)
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, srv)
    credentials = grpc.ssl_server_credentials(
        [(files["server.key"].read_bytes(), files["server.crt"].read_bytes())],
        root_certificates=files["ca"].read_bytes(),
        require_client_auth=True,
    )
    port = srv.add_secure_port("127.0.0.1:0", credentials)
    srv.start()
    yield f"127.0.0.1:{port}", files
    srv.stop(grace=None)


def tls_args(files: dict[str, Path], client: bool = True) -> list[str]:
    args = ["--ca", str(files["ca"]), "--server-name", SERVER_NAME]
    if client:
        args += ["--cert", str(files["client.crt"]), "--key", str(files["client.key"])]
    return args


def test_wait_ready_over_mutual_tls(mtls: tuple[str, dict[str, Path]]) -> None:
    target, files = mtls
    proc = run_script("wait_ready.py", target, "--timeout", "10", *tls_args(files))
    assert proc.returncode == 0, proc.stderr


def test_wait_ready_without_a_client_certificate_is_refused(
    mtls: tuple[str, dict[str, Path]],
) -> None:
    target, files = mtls
    proc = run_script("wait_ready.py", target, "--timeout", "1", *tls_args(files, client=False))
    assert proc.returncode == 1 and "UNAVAILABLE" in proc.stderr and "is SERVING" not in proc.stderr
    proc = run_script("wait_ready.py", target, "--timeout", "1")  # plaintext
    assert proc.returncode == 1 and "UNAVAILABLE" in proc.stderr and "is SERVING" not in proc.stderr


def test_smoke_test_over_mutual_tls(mtls: tuple[str, dict[str, Path]]) -> None:
    target, files = mtls
    proc = run_script("smoke_test.py", target, "--timeout", "10", *tls_args(files), key=API_KEY)
    assert proc.returncode == 0, proc.stderr
    assert "'logits': [1, 10]" in proc.stderr
