"""cert-manager Certificates, checked field by field here: kubernetes-validate has no
schema for cert-manager's CRDs, so `make helm-check` leaves them out of its run."""

from __future__ import annotations

import pytest
from helm_chart import CHART, VALUE_SETS, Chart, Manifest, find, one

VALUE_SETS.setdefault("tls-secrets", (CHART / "ci" / "tls-secrets-values.yaml",))
VALUE_SETS.setdefault("tls-cert-manager", (CHART / "ci" / "tls-cert-manager-values.yaml",))

HOSTS = {
    "gateway": "maas-gateway.serving.svc",
    "inference": "maas-inference-headless.serving.svc",
    "registry": "maas-registry.serving.svc",
}
# cert-manager.io/v1 Certificate spec fields the chart may set (a typo would be ignored
# by nothing but cert-manager's webhook at install time).
SPEC_FIELDS = {
    "secretName",
    "commonName",
    "dnsNames",
    "duration",
    "renewBefore",
    "privateKey",
    "usages",
    "issuerRef",
}
USAGES = {
    "signing", "digital signature", "content commitment", "key encipherment",
    "key agreement", "data encipherment", "cert sign", "crl sign", "encipher only",
    "decipher only", "any", "server auth", "client auth", "code signing",
    "email protection", "s/mime", "ipsec end system", "ipsec tunnel", "ipsec user",
    "timestamping", "ocsp signing", "microsoft sgc", "netscape sgc",
}  # fmt: skip


def certificates(chart: Chart, sets: tuple[str, ...] = ()) -> dict[str, Manifest]:
    docs = chart.render("tls-cert-manager", list(sets))
    found = find(docs, "Certificate")
    return {c["metadata"]["labels"]["app.kubernetes.io/component"]: c for c in found}


def test_one_certificate_per_component_into_the_secret_it_mounts(chart: Chart) -> None:
    certs = certificates(chart)
    assert set(certs) == set(HOSTS)
    docs = chart.render("tls-cert-manager")
    for component, cert in certs.items():
        assert cert["apiVersion"] == "cert-manager.io/v1"
        assert cert["metadata"]["name"] == f"maas-{component}-tls"
        assert set(cert["spec"]) == SPEC_FIELDS
        kind = "StatefulSet" if component == "registry" else "Deployment"
        volumes = one(docs, kind, f"maas-{component}")["spec"]["template"]["spec"]["volumes"]
        (tls,) = [v for v in volumes if v["name"] == "tls"]
        assert tls["secret"]["secretName"] == cert["spec"]["secretName"] == f"maas-{component}-tls"


@pytest.mark.parametrize("component", list(HOSTS))
def test_certificate_fields(chart: Chart, component: str) -> None:
    spec = certificates(chart)[component]["spec"]
    host = HOSTS[component]
    assert spec["commonName"] == host
    assert spec["dnsNames"][0] == "internal.maas.serving.svc", "the name internal clients verify"
    assert {host, f"{host}.cluster.local", host.split(".")[0]} <= set(spec["dnsNames"])
    assert ("maas.example.com" in spec["dnsNames"]) == (component == "gateway")
    assert {"server auth", "client auth"} <= set(spec["usages"]) <= USAGES
    assert spec["issuerRef"] == {
        "name": "maas-ca",
        "kind": "ClusterIssuer",
        "group": "cert-manager.io",
    }
    assert spec["privateKey"] == {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"}
    assert spec["duration"] == "2160h" and spec["renewBefore"] == "360h"


def test_no_certificates_without_cert_manager(chart: Chart) -> None:
    assert not find(chart.render("tls-secrets"), "Certificate")
    assert not find(chart.render("default", ["tls.certManager.enabled=true"]), "Certificate")


def test_an_existing_secret_replaces_that_components_certificate(chart: Chart) -> None:
    certs = certificates(chart, ("tls.registry.secretName=my-registry-tls",))
    assert set(certs) == {"gateway", "inference"}


def test_schema_rejects_an_unknown_issuer_kind(chart: Chart) -> None:
    error = chart.fail("tls-cert-manager", ["tls.certManager.issuerRef.kind=Vault"])
    assert "kind" in error
