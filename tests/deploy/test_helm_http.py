"""The gateway's HTTP (KServe v2 REST) port in the chart: container, env, Service,
NetworkPolicy and NOTES, all from values (issue C)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from helm_chart import Chart, env_of, one
from test_chart_scripts import notes_text

GATEWAY = "maas-gateway"


def gateway_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (only,) = one(docs, "Deployment", GATEWAY)["spec"]["template"]["spec"]["containers"]
    return only


def test_http_port_everywhere_by_default(chart: Chart) -> None:
    docs = chart.render()
    c = gateway_container(docs)
    assert {"name": "http", "containerPort": 8000, "protocol": "TCP"} in c["ports"]
    assert env_of(c)["MAAS_GATEWAY_HTTP_PORT"] == "8000"
    ports = {p["name"]: p for p in one(docs, "Service", GATEWAY)["spec"]["ports"]}
    assert ports["http"]["port"] == 8000 and ports["http"]["targetPort"] == "http"
    assert ports["grpc"]["port"] == 8001
    policy = one(docs, "NetworkPolicy", GATEWAY)
    opened = [
        p["port"] for rule in policy["spec"]["ingress"] if "from" not in rule for p in rule["ports"]
    ]
    assert 8000 in opened and 8001 in opened


def test_http_ports_follow_values(chart: Chart) -> None:
    sets = [
        "gateway.ports.http=9800",
        "gateway.service.httpPort=80",
        "gateway.service.type=NodePort",
        "gateway.service.httpNodePort=30080",
    ]
    docs = chart.render(sets=sets)
    c = gateway_container(docs)
    assert env_of(c)["MAAS_GATEWAY_HTTP_PORT"] == "9800"
    assert {"name": "http", "containerPort": 9800, "protocol": "TCP"} in c["ports"]
    ports = {p["name"]: p for p in one(docs, "Service", GATEWAY)["spec"]["ports"]}
    assert ports["http"]["port"] == 80 and ports["http"]["nodePort"] == 30080
    policy = one(docs, "NetworkPolicy", GATEWAY)
    assert any(p["port"] == 9800 for rule in policy["spec"]["ingress"] for p in rule["ports"])


def test_notes_show_a_curl_call(chart: Chart, tmp_path: Path) -> None:
    notes = notes_text(chart, tmp_path)
    assert "port-forward svc/maas-gateway 8000:8000" in notes
    assert "localhost:8000/v2/health/ready" in notes
    assert "localhost:8000/v2/models/" in notes


def test_http_readiness_probe_option(chart: Chart) -> None:
    docs = chart.render(sets=["gateway.probes.readiness.http=true", "gateway.auth.enabled=false"])
    c = gateway_container(docs)
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert "grpc" not in c["readinessProbe"]
    assert c["readinessProbe"]["periodSeconds"] == 5
    assert "grpc" in c["livenessProbe"] and "grpc" in c["startupProbe"]
    # With keys on, the probe (which carries none) would never pass: refused.
    error = chart.fail(sets=["gateway.probes.readiness.http=true"])
    assert "gateway.auth.enabled=false" in error
