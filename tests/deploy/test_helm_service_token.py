"""The chart's service token: generated once, sent by the gateway, asked for by
inference, and the NetworkPolicy kept as defence in depth (issue B, item 8)."""

from __future__ import annotations

from base64 import b64decode
from typing import Any

from helm_chart import Chart, env_of, find, one

GATEWAY, INFERENCE = "maas-gateway", "maas-inference"
REF = {"name": "maas-auth", "key": "service-token"}


def container(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (only,) = one(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"]
    return only


def test_a_generated_token_is_what_the_gateway_sends_and_inference_checks(chart: Chart) -> None:
    docs = chart.render()
    data = one(docs, "Secret", "maas-auth")["data"]
    token = b64decode(data["service-token"]).decode()
    assert len(token) >= 32
    assert token not in {b64decode(v).decode() for k, v in data.items() if k != "service-token"}
    gateway, inference = env_of(container(docs, GATEWAY)), env_of(container(docs, INFERENCE))
    assert gateway["MAAS_GATEWAY_BACKEND_TOKEN"]["secretKeyRef"] == REF
    assert inference["MAAS_INFERENCE_SERVICE_TOKEN"]["secretKeyRef"] == REF
    # Only the gateway holds it: no other workload reads it.
    registry = one(docs, "StatefulSet", "maas-registry")["spec"]["template"]["spec"]
    assert "service-token" not in str(registry)


def test_the_network_policy_stays_with_the_token(chart: Chart) -> None:
    assert one(chart.render(), "NetworkPolicy", INFERENCE)


def test_a_given_token_or_secret_is_used(chart: Chart) -> None:
    docs = chart.render(sets=["inference.auth.serviceToken=given-token"])
    data = one(docs, "Secret", "maas-auth")["data"]
    assert b64decode(data["service-token"]).decode() == "given-token"

    docs = chart.render(sets=["inference.auth.existingSecret=svc"])
    assert "service-token" not in one(docs, "Secret", "maas-auth")["data"]
    ref = {"name": "svc", "key": "service-token"}
    assert env_of(container(docs, GATEWAY))["MAAS_GATEWAY_BACKEND_TOKEN"]["secretKeyRef"] == ref
    env = env_of(container(docs, INFERENCE))
    assert env["MAAS_INFERENCE_SERVICE_TOKEN"]["secretKeyRef"] == ref


def test_the_token_alone_makes_the_secret(chart: Chart) -> None:
    sets = ["gateway.auth.enabled=false", "registry.auth.enabled=false"]
    data = one(chart.render(sets=sets), "Secret", "maas-auth")["data"]
    assert set(data) == {"service-token"}


def test_auth_off_means_no_token_anywhere(chart: Chart) -> None:
    docs = chart.render(sets=["inference.auth.enabled=false"])
    assert "MAAS_GATEWAY_BACKEND_TOKEN" not in env_of(container(docs, GATEWAY))
    assert "MAAS_INFERENCE_SERVICE_TOKEN" not in env_of(container(docs, INFERENCE))
    assert "service-token" not in one(docs, "Secret", "maas-auth")["data"]
    sets = ["inference.auth.enabled=false", "gateway.auth.enabled=false"]
    assert not find(
        chart.render(sets=[*sets, "registry.auth.enabled=false"]), "Secret", "maas-auth"
    )
    # The NetworkPolicy does not depend on the token.
    assert one(docs, "NetworkPolicy", INFERENCE)
