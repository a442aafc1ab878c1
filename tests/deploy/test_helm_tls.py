"""tls.enabled in the chart: Secrets mounted whole, env naming the mounted files, probes
over HTTPS, mutual TLS on the internal hops, NetworkPolicy unchanged, and NOTES.txt."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from helm_chart import CHART, VALUE_SETS, Chart, Manifest, env_of, find, one

# The chart's own TLS value files (also run by `make helm-check`).
VALUE_SETS.setdefault("tls-secrets", (CHART / "ci" / "tls-secrets-values.yaml",))
VALUE_SETS.setdefault("tls-cert-manager", (CHART / "ci" / "tls-cert-manager-values.yaml",))
TLS_SETS = ("tls-secrets", "tls-cert-manager")

WORKLOADS = {
    "gateway": ("Deployment", "maas-gateway"),
    "inference": ("Deployment", "maas-inference"),
    "registry": ("StatefulSet", "maas-registry"),
}
SECRETS = {
    "tls-secrets": {
        "gateway": "gateway-tls",
        "inference": "inference-tls",
        "registry": "registry-tls",
    },
    "tls-cert-manager": {
        "gateway": "maas-gateway-tls",
        "inference": "maas-inference-tls",
        "registry": "maas-registry-tls",
    },
}
DIR = "/etc/maas/tls"


def pod(docs: list[Manifest], component: str) -> Manifest:
    kind, name = WORKLOADS[component]
    spec: Manifest = one(docs, kind, name)["spec"]["template"]["spec"]
    return spec


def container(docs: list[Manifest], component: str) -> Manifest:
    (first,) = [c for c in pod(docs, component)["containers"] if c["name"] == component]
    return first


@pytest.mark.parametrize("values", TLS_SETS)
@pytest.mark.parametrize("component", list(WORKLOADS))
def test_secret_mounted_whole_so_rotation_reaches_the_pod(
    chart: Chart, values: str, component: str
) -> None:
    docs = chart.render(values)
    (volume,) = [v for v in pod(docs, component)["volumes"] if v["name"] == "tls"]
    assert volume["secret"]["secretName"] == SECRETS[values][component]
    assert "items" not in volume["secret"], "the whole Secret, so ca.crt comes along"
    (mount,) = [m for m in container(docs, component)["volumeMounts"] if m["name"] == "tls"]
    assert mount == {"name": "tls", "mountPath": DIR, "readOnly": True}
    assert "subPath" not in mount, "a subPath mount never sees a renewed Secret"


@pytest.mark.parametrize("values", TLS_SETS)
def test_env_points_at_the_mounted_files(chart: Chart, values: str) -> None:
    docs = chart.render(values)
    for component in WORKLOADS:
        env = env_of(container(docs, component))
        prefix = f"MAAS_{component.upper()}_"
        assert env[prefix + "TLS_CERT"] == f"{DIR}/tls.crt"
        assert env[prefix + "TLS_KEY"] == f"{DIR}/tls.key"
    # Internal hops are mutual TLS: registry and inference require client certificates...
    for component in ("registry", "inference"):
        env = env_of(container(docs, component))
        assert env[f"MAAS_{component.upper()}_TLS_CLIENT_CA"] == f"{DIR}/ca.crt"
    # ...and their callers present one, verifying the server with the secret's CA.
    name = "maas-internal.example.com" if values == "tls-secrets" else "internal.maas.serving.svc"
    for component in ("gateway", "inference"):
        env = env_of(container(docs, component))
        prefix = f"MAAS_{component.upper()}_"
        assert env[prefix + "TLS_CA"] == f"{DIR}/ca.crt"
        assert env[prefix + "TLS_CLIENT_CERT"] == f"{DIR}/tls.crt"
        assert env[prefix + "TLS_CLIENT_KEY"] == f"{DIR}/tls.key"
        assert env[prefix + "TLS_SERVER_NAME"] == name
    # The gateway's public port asks for client certificates only when told to.
    gateway = env_of(container(docs, "gateway"))
    assert ("MAAS_GATEWAY_TLS_CLIENT_CA" in gateway) == (values == "tls-secrets")


def test_no_tls_env_volume_or_certificate_by_default(chart: Chart) -> None:
    docs = chart.render()
    for component in WORKLOADS:
        assert not [k for k in env_of(container(docs, component)) if "_TLS_" in k]
        assert not [v for v in pod(docs, component)["volumes"] if v["name"] == "tls"]
    assert not find(docs, "Certificate")


@pytest.mark.parametrize("values", TLS_SETS)
@pytest.mark.parametrize("component", list(WORKLOADS))
def test_probes_are_https_on_the_metrics_port(chart: Chart, values: str, component: str) -> None:
    """kubelet's gRPC probes cannot speak TLS; with auth on, the gateway's HTTP health
    route wants an API key, so every probe asks the metrics port: /healthz to start
    and stay alive, /readyz (the API service can serve) to take traffic."""
    live = container(chart.render(values), component)
    paths = {"startupProbe": "/healthz", "readinessProbe": "/readyz", "livenessProbe": "/healthz"}
    for kind, path in paths.items():
        assert "grpc" not in live[kind]
        assert live[kind]["httpGet"] == {"scheme": "HTTPS", "path": path, "port": "metrics"}


def test_gateway_readiness_uses_v2_ready_over_https_when_auth_is_off(chart: Chart) -> None:
    docs = chart.render("tls-cert-manager", ["gateway.auth.enabled=false"])
    probe = container(docs, "gateway")["readinessProbe"]["httpGet"]
    assert probe == {"scheme": "HTTPS", "path": "/v2/health/ready", "port": "http"}
    assert container(docs, "gateway")["livenessProbe"]["httpGet"]["path"] == "/healthz"


def policies(docs: list[Manifest]) -> list[Any]:
    return [(p["metadata"]["name"], p["spec"]) for p in find(docs, "NetworkPolicy")]


@pytest.mark.parametrize("values", TLS_SETS)
def test_network_policies_unchanged_by_tls(chart: Chart, values: str) -> None:
    assert policies(chart.render(values)) == policies(chart.render())
    assert len(find(chart.render(values), "NetworkPolicy")) == 3


def test_no_new_ports_with_tls(chart: Chart) -> None:
    """No extra (plaintext) port appears: the metrics port itself turns HTTPS."""
    for component in WORKLOADS:
        plain = container(chart.render(), component)["ports"]
        assert container(chart.render("tls-secrets"), component)["ports"] == plain


def test_scrape_hints_and_service_monitor_say_https(chart: Chart) -> None:
    docs = chart.render("tls-cert-manager", ["serviceMonitor.enabled=true"])
    for component, (kind, name) in WORKLOADS.items():
        notes = one(docs, kind, name)["spec"]["template"]["metadata"]["annotations"]
        assert notes["prometheus.io/scheme"] == "https"
        monitor = one(docs, "ServiceMonitor", f"maas-{component}-metrics")
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["scheme"] == "https"
        assert endpoint["tlsConfig"] == {
            "ca": {"secret": {"name": f"maas-{component}-tls", "key": "ca.crt"}},
            "serverName": "internal.maas.serving.svc",
        }
    plain = chart.render("default", ["serviceMonitor.enabled=true"])
    assert (
        "scheme" not in one(plain, "ServiceMonitor", "maas-gateway-metrics")["spec"]["endpoints"][0]
    )


def test_seed_job_and_helm_test_speak_tls(chart: Chart) -> None:
    docs = chart.render("tls-cert-manager")
    job = one(docs, "Job", "maas-seed")["spec"]["template"]["spec"]
    for c in job["initContainers"] + job["containers"]:
        args = c["command"]
        assert args[args.index("--ca") + 1] == f"{DIR}/ca.crt"
        assert args[args.index("--cert") + 1] == f"{DIR}/tls.crt"
        assert {"name": "tls", "mountPath": DIR, "readOnly": True} in c["volumeMounts"]
    (test_pod,) = find(docs, "Pod")
    args = test_pod["spec"]["containers"][0]["command"]
    assert args[args.index("--ca") + 1] == f"{DIR}/ca.crt" and "--cert" not in args


def test_missing_certificate_source_is_named(chart: Chart) -> None:
    error = chart.fail("default", ["tls.enabled=true"])
    assert "tls.gateway.secretName" in error and "tls.certManager" in error
    error = chart.fail("default", ["tls.enabled=true", "tls.certManager.enabled=true"])
    assert "tls.certManager.issuerRef.name" in error


def notes(chart: Chart, tmp_path: Path, values: str) -> str:
    """NOTES.txt as `helm install` prints it (through tpl in a copy of the chart)."""
    copy = tmp_path / "maas"
    shutil.copytree(CHART, copy)
    (copy / "files" / "NOTES.txt").write_text((CHART / "templates" / "NOTES.txt").read_text())
    (copy / "templates" / "zz-notes.yaml").write_text(
        'notes: {{ tpl (.Files.Get "files/NOTES.txt") . | toJson }}\n'
    )
    args = [chart.helm, "template", "maas", str(copy), "--namespace", "serving"]
    for path in VALUE_SETS[values]:
        args += ["--values", str(path)]
    args += ["--show-only", "templates/zz-notes.yaml"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    text: str = yaml.safe_load(proc.stdout)["notes"]
    return text


def test_notes_print_the_tls_way_to_call(chart: Chart, tmp_path: Path) -> None:
    text = notes(chart, tmp_path, "tls-cert-manager")
    assert "-plaintext" not in text
    assert "grpcurl -cacert ca.crt -servername maas-gateway.serving.svc " in text
    assert "get secret maas-gateway-tls -o jsonpath='{.data.ca\\.crt}'" in text
    assert 'ssl=True, root_certificates="ca.crt"' in text
    assert "https://maas-gateway.serving.svc:8000/v2/health/ready" in text
    plain = notes(chart, tmp_path / "plain", "default")
    assert "grpcurl -plaintext" in plain and "ssl=True" not in plain
