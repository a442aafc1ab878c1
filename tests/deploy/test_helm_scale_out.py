"""State that scales out in the chart (issue F): the registry replicated on PostgreSQL and
an object store (a Deployment, PDB and HPA, no PVC) or one StatefulSet as before, the
gateway's Redis for shared rate limits, the egress NetworkPolicies, the schema's pairing
rules and NOTES.txt."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from helm_chart import CHART, VALUE_SETS, Chart, Manifest, env_of, find, one

# The chart's own scale-out value files (also run by `make helm-check`).
VALUE_SETS.setdefault("scale-out", (CHART / "ci" / "scale-out-values.yaml",))
VALUE_SETS.setdefault("scale-out-tls", (CHART / "ci" / "scale-out-tls-values.yaml",))
SCALED = ("scale-out", "scale-out-tls")
REGISTRY = "maas-registry"
GATEWAY = "maas-gateway"
EXTERNAL = [
    "registry.database.url=postgresql://maas@pg:5432/maas",
    "registry.objectStore.url=s3://bucket/prefix",
]


def container(docs: list[Manifest], kind: str, name: str, component: str) -> Manifest:
    spec = one(docs, kind, name)["spec"]["template"]["spec"]
    (found,) = [c for c in spec["containers"] if c["name"] == component]
    result: Manifest = found
    return result


def volumes(docs: list[Manifest], kind: str, name: str) -> dict[str, Manifest]:
    spec = one(docs, kind, name)["spec"]["template"]["spec"]
    return {v["name"]: v for v in spec["volumes"]}


def mounts(found: Manifest) -> dict[str, str]:
    return {m["name"]: m["mountPath"] for m in found["volumeMounts"]}


def egress(docs: list[Manifest], name: str) -> list[dict[str, Any]]:
    policy = one(docs, "NetworkPolicy", f"{name}-egress")
    assert policy["spec"]["policyTypes"] == ["Egress"]
    rules: list[dict[str, Any]] = policy["spec"]["egress"]
    return rules


def rule_to(rules: list[dict[str, Any]], port: int) -> list[dict[str, Any]]:
    """The peers of the one rule that opens TCP `port`."""
    (rule,) = [r for r in rules if {"port": port, "protocol": "TCP"} in r["ports"]]
    peers: list[dict[str, Any]] = rule["to"]
    return peers


# ---- the registry: one StatefulSet, or replicated ---------------------------------------


def test_without_an_object_store_the_registry_stays_one_statefulset(chart: Chart) -> None:
    for sets in ([], ["registry.database.url=postgresql://maas@pg:5432/maas"]):
        docs = chart.render(sets=sets)
        sts = one(docs, "StatefulSet", REGISTRY)
        assert sts["spec"]["replicas"] == 1
        assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
        assert not find(docs, "Deployment", REGISTRY)
        assert not find(docs, "HorizontalPodAutoscaler", REGISTRY)
        assert not find(docs, "NetworkPolicy", f"{REGISTRY}-egress")
        env = env_of(container(docs, "StatefulSet", REGISTRY, "registry"))
        assert "MAAS_REGISTRY_BLOB_URL" not in env


@pytest.mark.parametrize("values", SCALED)
def test_replicated_registry_is_a_deployment_with_pdb_and_no_pvc(chart: Chart, values: str) -> None:
    docs = chart.render(values)
    assert not find(docs, "StatefulSet")
    assert not find(docs, "PersistentVolumeClaim")
    assert not find(docs, "Service", f"{REGISTRY}-headless")
    deployment = one(docs, "Deployment", REGISTRY)
    assert "volumeClaimTemplates" not in deployment["spec"]
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert "emptyDir" in volumes(docs, "Deployment", REGISTRY)["data"]
    pdb = one(docs, "PodDisruptionBudget", REGISTRY)
    labels = deployment["spec"]["selector"]["matchLabels"]
    assert pdb["spec"]["selector"]["matchLabels"] == labels
    # The gateway and inference still call the one Service, which spans the replicas.
    service = one(docs, "Service", REGISTRY)
    assert service["spec"]["selector"] == labels
    address = "maas-registry.serving.svc.cluster.local:8011"
    assert env_of(container(docs, "Deployment", GATEWAY, "gateway"))["MAAS_GATEWAY_REGISTRY"] == (
        address
    )
    inference = env_of(container(docs, "Deployment", "maas-inference", "inference"))
    assert inference["MAAS_INFERENCE_REGISTRY"] == address


def test_replicated_registry_scales_from_two_by_its_hpa(chart: Chart) -> None:
    docs = chart.render("scale-out")
    assert "replicas" not in one(docs, "Deployment", REGISTRY)["spec"]
    hpa = one(docs, "HorizontalPodAutoscaler", REGISTRY)
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": REGISTRY,
    }
    assert hpa["spec"]["minReplicas"] == 2 and hpa["spec"]["maxReplicas"] == 4
    # A floor of 2, whatever minReplicas says: one pod would be a single point of failure.
    low = chart.render("scale-out", ["registry.autoscaling.minReplicas=1"])
    assert one(low, "HorizontalPodAutoscaler", REGISTRY)["spec"]["minReplicas"] == 2
    fixed = chart.render(sets=[*EXTERNAL, "registry.autoscaling.enabled=false"])
    assert one(fixed, "Deployment", REGISTRY)["spec"]["replicas"] == 2  # replicas: 1 means 2
    assert not find(fixed, "HorizontalPodAutoscaler", REGISTRY)
    assert one(chart.render("scale-out-tls"), "Deployment", REGISTRY)["spec"]["replicas"] == 3


def test_replicated_registry_env_comes_from_values_and_secrets(chart: Chart) -> None:
    docs = chart.render("scale-out")
    found = container(docs, "Deployment", REGISTRY, "registry")
    env = env_of(found)
    assert env["MAAS_REGISTRY_DATABASE_URL"] == {
        "secretKeyRef": {"name": "maas-postgres", "key": "url"}
    }
    assert env["MAAS_REGISTRY_BLOB_URL"] == "s3://maas-models/prod"
    assert env["MAAS_REGISTRY_S3_ENDPOINT_URL"] == "http://seaweedfs-s3.storage:8333"
    assert env["AWS_REGION"] == "us-east-1"
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[name] == {"secretKeyRef": {"name": "maas-s3", "key": name}}
    assert "AWS_CA_BUNDLE" not in env and "s3-ca" not in mounts(found)
    # Without a Secret the default AWS chain (IRSA, workload identity) provides credentials.
    bare = chart.render(sets=EXTERNAL)
    env = env_of(container(bare, "Deployment", REGISTRY, "registry"))
    assert "AWS_ACCESS_KEY_ID" not in env and "MAAS_REGISTRY_S3_ENDPOINT_URL" not in env


def test_object_store_ca_bundle_is_mounted_and_named(chart: Chart) -> None:
    docs = chart.render("scale-out-tls")
    found = container(docs, "Deployment", REGISTRY, "registry")
    assert env_of(found)["AWS_CA_BUNDLE"] == "/etc/maas/s3-ca/ca.pem"
    assert mounts(found)["s3-ca"] == "/etc/maas/s3-ca"
    volume = volumes(docs, "Deployment", REGISTRY)["s3-ca"]
    assert volume["secret"]["secretName"] == "minio-ca"
    assert volume["secret"]["items"] == [{"key": "ca.pem", "path": "ca.pem"}]
    # TLS of the chart's own listeners goes on as before beside it.
    assert env_of(found)["MAAS_REGISTRY_TLS_CERT"] == "/etc/maas/tls/tls.crt"
    config_map = chart.render(
        sets=[*EXTERNAL, "registry.objectStore.caBundle.configMapName=store-ca"]
    )
    volume = volumes(config_map, "Deployment", REGISTRY)["s3-ca"]
    assert volume["configMap"]["name"] == "store-ca"


# ---- the schema's pairing rules --------------------------------------------------------


def test_more_than_one_registry_pod_needs_the_object_store(chart: Chart) -> None:
    err = chart.fail(sets=["registry.replicas=2"])
    assert "/registry/objectStore/url" in err
    err = chart.fail(sets=["registry.replicas=3", EXTERNAL[0]])
    assert "/registry/objectStore/url" in err


def test_the_object_store_needs_an_external_database(chart: Chart) -> None:
    err = chart.fail(sets=[EXTERNAL[1]])
    assert "/registry/database" in err
    # Either form of external database will do.
    docs = chart.render(sets=[EXTERNAL[1], "registry.database.existingSecret=pg"])
    assert find(docs, "Deployment", REGISTRY)


@pytest.mark.parametrize(
    ("sets", "named"),
    [
        (["registry.objectStore.url=https://bucket"], "/registry/objectStore/url"),
        ([EXTERNAL[0], "registry.objectStore.url=s3://"], "/registry/objectStore/url"),
        (["gateway.rateLimit.redis.policy=fail-maybe"], "/gateway/rateLimit/redis/policy"),
        (
            [
                "registry.objectStore.caBundle.secretName=a",
                "registry.objectStore.caBundle.configMapName=b",
            ],
            "/registry/objectStore/caBundle",
        ),
    ],
)
def test_malformed_scale_out_values_are_refused(chart: Chart, sets: list[str], named: str) -> None:
    assert named in chart.fail(sets=sets)


# ---- the gateway's Redis --------------------------------------------------------------


@pytest.mark.parametrize("values", SCALED)
def test_gateway_redis_url_from_a_secret_and_the_policy(chart: Chart, values: str) -> None:
    docs = chart.render(values)
    found = container(docs, "Deployment", GATEWAY, "gateway")
    env = env_of(found)
    assert env["MAAS_GATEWAY_RATE_LIMIT_REDIS_URL"] == {
        "secretKeyRef": {"name": "maas-redis", "key": "url"}
    }
    policy = "fail-closed" if values == "scale-out" else "fail-open"
    assert env["MAAS_GATEWAY_RATE_LIMIT_REDIS_POLICY"] == policy
    plain = env_of(container(chart.render(), "Deployment", GATEWAY, "gateway"))
    assert not {k for k in plain if k.startswith("MAAS_GATEWAY_RATE_LIMIT_REDIS")}


def test_redis_ca_bundle_is_mounted(chart: Chart) -> None:
    docs = chart.render("scale-out-tls")
    assert mounts(container(docs, "Deployment", GATEWAY, "gateway"))["redis-ca"] == (
        "/etc/maas/redis-ca"
    )
    volume = volumes(docs, "Deployment", GATEWAY)["redis-ca"]
    assert volume["configMap"] == {
        "name": "redis-ca",
        "defaultMode": 0o444,
        "items": [{"key": "ca.crt", "path": "ca.crt"}],
    }
    assert "redis-ca" not in volumes(chart.render("scale-out"), "Deployment", GATEWAY)


# ---- NetworkPolicy egress ----------------------------------------------------------------


def test_no_egress_policy_unless_asked(chart: Chart) -> None:
    for sets in ([], EXTERNAL):
        docs = chart.render(sets=sets)
        assert not [p for p in find(docs, "NetworkPolicy") if "Egress" in p["spec"]["policyTypes"]]


def test_registry_egress_reaches_dns_postgres_and_the_store_only(chart: Chart) -> None:
    rules = egress(chart.render("scale-out"), REGISTRY)
    assert len(rules) == 3
    dns = next(r for r in rules if {"port": 53, "protocol": "UDP"} in r["ports"])
    assert dns["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
    assert rule_to(rules, 5432) == [{"ipBlock": {"cidr": "10.20.0.0/24"}}]
    (store,) = rule_to(rules, 8333)
    assert store["podSelector"]["matchLabels"] == {"app": "seaweedfs"}
    assert store["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "storage"}


def test_gateway_egress_reaches_its_peers_and_redis_only(chart: Chart) -> None:
    rules = egress(chart.render("scale-out"), GATEWAY)
    assert len(rules) == 5  # DNS, registry, inference, the API server, Redis
    component = {
        port: rule_to(rules, port)[0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        for port in (8011, 8021)
    }
    assert component == {8011: "registry", 8021: "inference"}
    assert rule_to(rules, 6443) == [{"ipBlock": {"cidr": "172.20.0.1/32"}}]
    (redis,) = rule_to(rules, 6379)
    assert redis["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "redis"}
    tls = egress(chart.render("scale-out-tls"), GATEWAY)
    assert rule_to(tls, 6380) == [{"ipBlock": {"cidr": "10.30.0.5/32"}}]
    # Without Redis there is no rule for it; with static discovery none for the API server.
    sets = ["networkPolicy.egress.enabled=true", "gateway.discovery.mode=dns"]
    assert len(egress(chart.render(sets=sets), GATEWAY)) == 3


@pytest.mark.parametrize(
    ("unset", "named"),
    [
        ("registry.database.networkPolicy.to", "registry.database.networkPolicy.to"),
        ("registry.objectStore.networkPolicy.to", "registry.objectStore.networkPolicy.to"),
        ("gateway.rateLimit.redis.networkPolicy.to", "gateway.rateLimit.redis.networkPolicy.to"),
        ("networkPolicy.egress.kubeApiServer.to", "networkPolicy.egress.kubeApiServer.to"),
    ],
)
def test_limited_egress_needs_the_peers_of_what_is_configured(
    chart: Chart, unset: str, named: str, tmp_path: Path
) -> None:
    override: dict[str, Any] = {}
    *parents, last = unset.split(".")
    node = override
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = []
    path = tmp_path / "empty-peers.yaml"
    path.write_text(yaml.safe_dump(override))
    VALUE_SETS[f"no-peers-{unset}"] = (*VALUE_SETS["scale-out"], path)
    assert named in chart.fail(f"no-peers-{unset}")


def test_egress_extra_rules_reach_both(chart: Chart) -> None:
    sets = [
        "networkPolicy.egress.extra[0].to[0].ipBlock.cidr=10.9.0.0/16",
        "networkPolicy.egress.extra[0].ports[0].port=4317",
        "networkPolicy.egress.extra[0].ports[0].protocol=TCP",
    ]
    docs = chart.render("scale-out", sets)
    for name in (REGISTRY, GATEWAY):
        assert rule_to(egress(docs, name), 4317) == [{"ipBlock": {"cidr": "10.9.0.0/16"}}]


# ---- NOTES.txt ----------------------------------------------------------------------------


def notes(chart: Chart, tmp_path: Path, values: str) -> str:
    """NOTES.txt as `helm install` prints it, for a value set (through tpl in a copy)."""
    copy = tmp_path / "maas"
    shutil.copytree(CHART, copy)
    (copy / "files" / "NOTES.txt").write_text((CHART / "templates" / "NOTES.txt").read_text())
    (copy / "templates" / "zz-notes.yaml").write_text(
        'notes: {{ tpl (.Files.Get "files/NOTES.txt") . | toJson }}\n'
    )
    args = [chart.helm, "template", "maas", str(copy), "--show-only", "templates/zz-notes.yaml"]
    for path in VALUE_SETS[values]:
        args += ["--values", str(path)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    text: str = yaml.safe_load(proc.stdout)["notes"]
    return text


def test_notes_name_the_registry_mode_and_the_limits(chart: Chart, tmp_path: Path) -> None:
    scaled = notes(chart, tmp_path / "scaled", "scale-out")
    assert "Registry: replicated (Deployment maas-registry, HPA 2-4 pods" in scaled
    assert "deployment/maas-registry" in scaled and "statefulset/" not in scaled
    assert "s3://maas-models/prod" in scaled
    assert "through Redis (Secret maas-redis, key url)" in scaled and "fail-closed" in scaled
    single = notes(chart, tmp_path / "single", "default")
    assert "Registry: one pod (StatefulSet maas-registry" in single
    assert "statefulset/maas-registry" in single
    assert "N replicas allow N times a key's rate" in single
