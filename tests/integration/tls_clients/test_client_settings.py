"""The client TLS settings of the gateway and inference: flags, env, and a half pair named."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.gateway.main import build_parser
from services.gateway.settings import GatewaySettings
from services.inference.main import parse_args
from services.inference.settings import InferenceSettings


def test_flags_make_client_tls() -> None:
    args = vars(
        build_parser().parse_args(
            ["--backends", "b:1", "--tls-ca", "ca.pem", "--tls-server-name", "inference"]
        )
    )
    tls = GatewaySettings.from_args(args).client_tls()
    assert tls is not None and tls.ca == "ca.pem" and tls.server_name == "inference"
    assert tls.options() == [("grpc.ssl_target_name_override", "inference")]
    inference = InferenceSettings.from_args(
        parse_args(["--tls-ca", "ca.pem", "--tls-client-cert", "c.pem", "--tls-client-key", "k"])
    ).client_tls()
    assert inference is not None and inference.files() == ("ca.pem", "c.pem", "k")


def test_env_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAAS_INFERENCE_TLS_CA", "/etc/maas/ca.pem")
    tls = InferenceSettings().client_tls()
    assert tls is not None and tls.ca == "/etc/maas/ca.pem"
    monkeypatch.delenv("MAAS_INFERENCE_TLS_CA")
    assert InferenceSettings().client_tls() is None  # nothing set: plaintext


def test_cert_without_key_is_named() -> None:
    with pytest.raises(ValidationError, match="needs its key"):
        GatewaySettings(backends="b:1", tls_client_cert="c.pem")
