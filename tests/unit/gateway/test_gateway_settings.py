"""Settings: the environment names the Helm chart sets, and the command-line flags."""

from __future__ import annotations

import pytest

from services.gateway.main import build_parser
from services.gateway.settings import GatewaySettings


def test_environment_names_match_the_chart(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "MAAS_GATEWAY_REGISTRY": "maas-registry:8011",
        "MAAS_GATEWAY_REGISTRY_TOKEN": "reader",
        "MAAS_GATEWAY_BACKEND_ENDPOINTSLICE": "maas-inference-headless",
        "MAAS_GATEWAY_NAMESPACE": "maas",
        "MAAS_GATEWAY_API_KEYS_FILE": "/etc/maas/gateway/api-keys.yaml",
        "MAAS_GATEWAY_NO_AUTH": "true",
        "MAAS_GATEWAY_GRACE_SECONDS": "15",
        "MAAS_GATEWAY_BALANCER": "p2c",
    }.items():
        monkeypatch.setenv(name, value)
    settings = GatewaySettings()
    assert (settings.port, settings.metrics_port) == (8001, 9001)
    assert settings.registry == "maas-registry:8011"
    assert settings.secret("registry_token") == "reader"
    assert "reader" not in repr(settings)
    assert settings.backend_endpointslice == "maas-inference-headless"
    assert settings.namespace == "maas" and settings.no_auth and settings.balancer == "p2c"
    assert settings.grace_seconds == 15
    assert (settings.default_timeout_seconds, settings.max_attempts) == (30.0, 3)
    assert settings.max_message_bytes == 64 * 1024 * 1024


def test_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAAS_GATEWAY_BACKENDS", "a:1")
    args = vars(
        build_parser().parse_args(
            ["--port", "0", "--backends", "b:1, c:2", "--max-attempts", "5", "--no-auth"]
        )
    )
    settings = GatewaySettings.from_args(args)
    assert settings.backend_list() == ["b:1", "c:2"]
    assert (settings.port, settings.max_attempts, settings.no_auth) == (0, 5, True)
    assert GatewaySettings().backend_list() == ["a:1"]


def test_bad_values_are_refused() -> None:
    with pytest.raises(ValueError, match="balancer"):
        GatewaySettings(balancer="random")
    with pytest.raises(ValueError, match="eject_base_seconds"):
        GatewaySettings(eject_base_seconds=60, eject_max_seconds=30)
