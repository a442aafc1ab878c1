"""TLS on the gRPC listeners: served, refused in plaintext, mutual TLS, bad files."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

from services.common.settings import ServiceSettings
from services.common.tls import ServerTls, TlsError
from services.gateway.settings import GatewaySettings
from tests.integration.tls.conftest import StartGateway, pair_request
from tests.servers import ROOT
from tests.tlscerts import Ca, Issued


def _credentials(ca: Ca, client: Issued | None = None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=ca.pem(),
        private_key=client.key.read_bytes() if client else None,
        certificate_chain=client.cert.read_bytes() if client else None,
    )


def _sum(response: object) -> np.ndarray:
    return np.frombuffer(response.raw_output_contents[0], np.float32)  # type: ignore[attr-defined]


async def test_model_infer_through_a_tls_gateway(
    start_gateway: StartGateway, ca: Ca, server_cert: Issued
) -> None:
    gateway = await start_gateway(tls_cert=str(server_cert.cert), tls_key=str(server_cert.key))
    async with grpc.aio.secure_channel(f"localhost:{gateway.grpc.port}", _credentials(ca)) as ch:
        response = await pb_grpc.GRPCInferenceServiceStub(ch).ModelInfer(pair_request(), timeout=10)
    assert _sum(response).tolist() == [2.0, 3.0, 4.0, 5.0]


async def test_plaintext_client_is_refused(
    start_gateway: StartGateway, server_cert: Issued
) -> None:
    gateway = await start_gateway(tls_cert=str(server_cert.cert), tls_key=str(server_cert.key))
    async with grpc.aio.insecure_channel(f"localhost:{gateway.grpc.port}") as ch:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await pb_grpc.GRPCInferenceServiceStub(ch).ModelInfer(pair_request(), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_accepts_only_clients_the_ca_signed(
    start_gateway: StartGateway, ca: Ca, foreign_ca: Ca, server_cert: Issued
) -> None:
    gateway = await start_gateway(
        tls_cert=str(server_cert.cert),
        tls_key=str(server_cert.key),
        tls_client_ca=str(ca.cert),
    )
    target = f"localhost:{gateway.grpc.port}"
    trusted = ca.issue("client", "client", client=True)
    async with grpc.aio.secure_channel(target, _credentials(ca, trusted)) as ch:
        response = await pb_grpc.GRPCInferenceServiceStub(ch).ModelInfer(pair_request(), timeout=10)
    assert _sum(response).tolist() == [2.0, 3.0, 4.0, 5.0]

    foreign = foreign_ca.issue("stranger", "stranger", client=True)
    for credentials in (_credentials(ca), _credentials(ca, foreign)):
        async with grpc.aio.secure_channel(target, credentials) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await pb_grpc.GRPCInferenceServiceStub(ch).ModelInfer(pair_request(), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_key_that_does_not_match_is_a_startup_error(ca: Ca) -> None:
    one, other = ca.issue("one"), ca.issue("other")
    with pytest.raises(TlsError) as caught:
        ServerTls(GatewaySettings(tls_cert=str(one.cert), tls_key=str(other.key)))
    assert str(caught.value) == (
        "--tls-key (MAAS_GATEWAY_TLS_KEY): does not match the certificate of --tls-cert"
    )


def test_an_unreadable_file_is_named(ca: Ca, tmp_path: Path) -> None:
    one = ca.issue("one")
    missing = tmp_path / "absent.pem"
    with pytest.raises(TlsError) as caught:
        ServerTls(ServiceSettings(tls_cert=str(missing), tls_key=str(one.key)))
    assert (
        str(caught.value) == "--tls-cert (MAAS_TLS_CERT): cannot read it: No such file or directory"
    )
    with pytest.raises(TlsError, match="--tls-cert"):
        ServerTls(ServiceSettings(tls_key=str(one.key)))


def test_a_service_with_a_bad_key_exits_2_naming_the_setting(ca: Ca, tmp_path: Path) -> None:
    import subprocess

    one, other = ca.issue("one"), ca.issue("other")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.registry.main",
            "--port",
            "0",
            "--metrics-port",
            "0",
            "--no-auth",
            "--data-dir",
            str(tmp_path / "data"),
            "--tls-cert",
            str(one.cert),
            "--tls-key",
            str(other.key),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "--tls-key (MAAS_REGISTRY_TLS_KEY): does not match" in done.stderr
    assert "PRIVATE KEY" not in done.stderr + done.stdout


async def test_plaintext_is_logged_once_at_start_and_tls_not(
    start_gateway: StartGateway, server_cert: Issued, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="services.common.server")

    def plaintext_lines() -> int:
        return sum("serving plaintext" in r.getMessage() for r in caplog.records)

    await start_gateway()
    assert plaintext_lines() == 1
    caplog.clear()
    await start_gateway(tls_cert=str(server_cert.cert), tls_key=str(server_cert.key))
    assert plaintext_lines() == 0
