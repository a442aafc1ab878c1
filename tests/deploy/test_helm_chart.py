"""What the chart renders: autoscaling, GPU placement, probes, security, network policy,
discovery, RBAC, secrets and the hook Job/Pod, checked on `helm template` output."""

from __future__ import annotations

import hashlib
import re
import tomllib
from base64 import b64decode
from typing import Any

import pytest
import yaml
from helm_chart import CHART, NAMESPACE, ROOT, Chart, env_of, find, one, pod_specs

GATEWAY, INFERENCE, REGISTRY = "maas-gateway", "maas-inference", "maas-registry"
HEADLESS = "maas-inference-headless"
SERVICES = {"gateway": GATEWAY, "inference": INFERENCE, "registry": REGISTRY}
PORTS = {"gateway": 8001, "inference": 8021, "registry": 8011}
GPU_KEY = "nvidia.com/gpu"


def workload(docs: list[dict[str, Any]], component: str) -> dict[str, Any]:
    kind = "StatefulSet" if component == "registry" else "Deployment"
    return one(docs, kind, SERVICES[component])


def container(docs: list[dict[str, Any]], component: str) -> dict[str, Any]:
    (only,) = workload(docs, component)["spec"]["template"]["spec"]["containers"]
    return only


def selector_labels(component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "maas",
        "app.kubernetes.io/instance": "maas",
        "app.kubernetes.io/component": component,
    }


# ---- autoscaling --------------------------------------------------------------------


@pytest.mark.parametrize("component", ["gateway", "inference"])
def test_hpa_targets_its_deployment_with_cpu_and_behavior(chart: Chart, component: str) -> None:
    docs = chart.render()
    hpa = one(docs, "HorizontalPodAutoscaler", SERVICES[component])
    assert hpa["apiVersion"] == "autoscaling/v2"
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": SERVICES[component],
    }
    assert workload(docs, component)  # the target exists
    assert "replicas" not in workload(docs, component)["spec"], "HPA owns the replica count"
    assert spec["metrics"] == [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 70},
            },
        }
    ]
    assert 1 <= spec["minReplicas"] <= spec["maxReplicas"]
    behavior = spec["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 300
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 0
    assert behavior["scaleUp"]["policies"] and behavior["scaleDown"]["policies"]
    # CPU utilization needs a CPU request to compute against.
    assert container(docs, component)["resources"]["requests"]["cpu"]


def test_hpa_pods_metric_from_an_adapter(chart: Chart) -> None:
    sets = [
        "inference.autoscaling.podsMetric.enabled=true",
        "gateway.autoscaling.podsMetric.enabled=true",
    ]
    docs = chart.render(sets=sets)
    names = {}
    for name in (GATEWAY, INFERENCE):
        metrics = one(docs, "HorizontalPodAutoscaler", name)["spec"]["metrics"]
        (pods,) = [m["pods"] for m in metrics if m["type"] == "Pods"]
        assert pods["target"]["type"] == "AverageValue"
        assert isinstance(pods["target"]["averageValue"], str)
        names[name] = pods["metric"]["name"]
    assert names == {
        GATEWAY: "maas_gateway_inflight_requests",
        INFERENCE: "maas_inference_queue_depth",
    }


def test_no_hpa_for_the_registry_or_on_kind(chart: Chart) -> None:
    assert {h["metadata"]["name"] for h in find(chart.render(), "HorizontalPodAutoscaler")} == {
        GATEWAY,
        INFERENCE,
    }
    kind = chart.render("kind")
    assert not find(kind, "HorizontalPodAutoscaler")
    for component in SERVICES:
        assert workload(kind, component)["spec"]["replicas"] == 1


def test_an_hpa_needs_a_metric(chart: Chart) -> None:
    err = chart.fail(sets=["gateway.autoscaling.targetCPUUtilizationPercentage=0"])
    assert "podsMetric" in err


# ---- GPU placement --------------------------------------------------------------------


def test_gpu_values_request_a_gpu_on_gpu_nodes(chart: Chart) -> None:
    docs = chart.render("gpu")
    spec = workload(docs, "inference")["spec"]["template"]["spec"]
    inference = container(docs, "inference")
    limit = inference["resources"]["limits"][GPU_KEY]
    assert limit == "1" and isinstance(limit, str), "extended resources must be quoted strings"
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"] == [
        {
            "matchExpressions": [
                {"key": "nvidia.com/gpu.present", "operator": "In", "values": ["true"]}
            ]
        }
    ]
    assert {"key": GPU_KEY, "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert inference["image"] == "maas:0.1.0-gpu"
    assert env_of(inference)["MAAS_INFERENCE_REQUIRE_CUDA"] == "true"
    # Only inference moves to GPUs.
    for component in ("gateway", "registry"):
        other = container(docs, component)
        assert other["image"] == "maas:0.1.0"
        assert GPU_KEY not in other["resources"].get("limits", {})


def test_gpu_runtime_class_and_image_override(chart: Chart) -> None:
    docs = chart.render("full")
    spec = workload(docs, "inference")["spec"]["template"]["spec"]
    assert spec["runtimeClassName"] == "nvidia"
    assert container(docs, "inference")["image"] == "registry.example.com/ml/maas-gpu:1.2.3-cuda12"
    # The user's own affinity survives beside the GPU node affinity.
    assert "podAntiAffinity" in spec["affinity"] and "nodeAffinity" in spec["affinity"]


@pytest.mark.parametrize("values", ["default", "kind"])
def test_cpu_values_have_no_gpu_anything(chart: Chart, values: str) -> None:
    docs = chart.render(values)
    spec = workload(docs, "inference")["spec"]["template"]["spec"]
    inference = container(docs, "inference")
    assert GPU_KEY not in inference["resources"].get("limits", {})
    assert "affinity" not in spec and "tolerations" not in spec and "runtimeClassName" not in spec
    assert inference["image"] == "maas:0.1.0"
    assert "MAAS_INFERENCE_REQUIRE_CUDA" not in env_of(inference)


# ---- probes, ports, lifecycle -----------------------------------------------------------


@pytest.mark.parametrize("values", ["default", "kind", "gpu"])
def test_probes_are_native_grpc_on_the_grpc_port(chart: Chart, values: str) -> None:
    docs = chart.render(values)
    for component, port in PORTS.items():
        c = container(docs, component)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports["grpc"] == port
        assert env_of(c)[f"MAAS_{component.upper()}_PORT"] == str(port)
        api = {"registry": "maas.registry.v1.ModelRegistry"}.get(
            component, "inference.GRPCInferenceService"
        )
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            want = {"port": port, "service": api} if probe == "readinessProbe" else {"port": port}
            assert c[probe]["grpc"] == want, f"{component} {probe}"
            assert "httpGet" not in c[probe] and "exec" not in c[probe]


def test_ports_follow_values(chart: Chart) -> None:
    sets = ["gateway.ports.grpc=9100", "gateway.ports.metrics=9200", "inference.ports.grpc=9300"]
    docs = chart.render(sets=sets)
    gw = container(docs, "gateway")
    assert gw["readinessProbe"]["grpc"]["port"] == 9100
    assert env_of(gw)["MAAS_GATEWAY_PORT"] == "9100"
    assert env_of(gw)["MAAS_GATEWAY_METRICS_PORT"] == "9200"
    assert container(docs, "inference")["startupProbe"]["grpc"]["port"] == 9300
    headless = one(docs, "Service", HEADLESS)
    assert headless["spec"]["ports"][0]["port"] == 9300


@pytest.mark.parametrize("component", list(SERVICES))
def test_drain_fits_in_the_termination_grace_period(chart: Chart, component: str) -> None:
    docs = chart.render()
    spec = workload(docs, component)["spec"]["template"]["spec"]
    c = container(docs, component)
    grace = float(env_of(c)[f"MAAS_{component.upper()}_GRACE_SECONDS"])
    command = c["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    assert spec["terminationGracePeriodSeconds"] > grace + float(command[1])


@pytest.mark.parametrize("component", list(SERVICES))
def test_pdb_and_topology_spread(chart: Chart, component: str) -> None:
    docs = chart.render()
    pdb = one(docs, "PodDisruptionBudget", SERVICES[component])
    assert pdb["spec"]["selector"]["matchLabels"] == selector_labels(component)
    (spread,) = workload(docs, component)["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["labelSelector"]["matchLabels"] == selector_labels(component)


# ---- security ---------------------------------------------------------------------------


@pytest.mark.parametrize("values", ["default", "kind", "gpu", "full"])
def test_every_pod_is_locked_down(chart: Chart, values: str) -> None:
    specs = pod_specs(chart.render(values))
    assert len(specs) == 5, sorted(specs)  # gateway, inference, registry, seed Job, test Pod
    for where, spec in specs.items():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, where
        assert pod["runAsUser"] == 10001 and pod["runAsGroup"] == 10001, where
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, where
        for c in spec["containers"] + spec.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"] == {"drop": ["ALL"]}, where
            assert sc["runAsNonRoot"] is True, where


@pytest.mark.parametrize("component", list(SERVICES))
def test_writable_paths_are_volumes(chart: Chart, component: str) -> None:
    docs = chart.render("kind")
    spec = workload(docs, component)["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container(docs, component)["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    if component == "inference":
        cache = env_of(container(docs, component))["MAAS_INFERENCE_CACHE_DIR"]
        assert "emptyDir" in volumes[mounts[cache]]


def test_only_the_gateway_mounts_a_service_account_token(chart: Chart) -> None:
    specs = pod_specs(chart.render())
    for where, spec in specs.items():
        expected = where == f"Deployment/{GATEWAY}"
        assert spec["automountServiceAccountToken"] is expected, where
    gateway = pod_specs(chart.render(sets=["gateway.discovery.mode=dns"]))[f"Deployment/{GATEWAY}"]
    assert gateway["automountServiceAccountToken"] is False


# ---- network policy -------------------------------------------------------------------


def peers(policy: dict[str, Any], port: int) -> list[dict[str, Any]]:
    """The `from` peers of every ingress rule that opens `port` (missing: everyone)."""
    found = []
    for rule in policy["spec"]["ingress"]:
        if any(p["port"] == port for p in rule["ports"]):
            found.extend(rule.get("from", [{"everyone": True}]))
    return found


def test_network_policy_only_gateway_reaches_inference(chart: Chart) -> None:
    docs = chart.render()
    policy = one(docs, "NetworkPolicy", INFERENCE)
    assert policy["spec"]["podSelector"]["matchLabels"] == selector_labels("inference")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert peers(policy, 8021) == [{"podSelector": {"matchLabels": selector_labels("gateway")}}]
    assert len(policy["spec"]["ingress"]) == 1, "nothing else is let in by default"


def test_network_policy_registry_clients(chart: Chart) -> None:
    policy = one(chart.render(), "NetworkPolicy", REGISTRY)
    assert policy["spec"]["podSelector"]["matchLabels"] == selector_labels("registry")
    (peer,) = peers(policy, 8011)
    selector = peer["podSelector"]
    assert set(peer) == {"podSelector"}, "no namespace-wide or IP peers"
    assert selector["matchLabels"] == {
        "app.kubernetes.io/name": "maas",
        "app.kubernetes.io/instance": "maas",
    }
    assert selector["matchExpressions"] == [
        {
            "key": "app.kubernetes.io/component",
            "operator": "In",
            "values": ["gateway", "inference", "seed"],
        }
    ]


def test_network_policy_gateway_is_the_open_door(chart: Chart) -> None:
    docs = chart.render()
    assert peers(one(docs, "NetworkPolicy", GATEWAY), 8001) == [{"everyone": True}]
    # Metrics ports stay closed unless scrapers are named; then only those ports open.
    full = chart.render("full")
    for component, name in SERVICES.items():
        policy = one(full, "NetworkPolicy", name)
        metrics_port = {"gateway": 9001, "inference": 9021, "registry": 9011}[component]
        assert peers(policy, metrics_port) == [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
        ]


def test_seed_job_pods_match_the_registry_policy(chart: Chart) -> None:
    docs = chart.render()
    labels = one(docs, "Job", "maas-seed")["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "seed"
    assert labels["app.kubernetes.io/instance"] == "maas"


# ---- discovery, services, RBAC --------------------------------------------------------


def test_headless_service_selects_inference_pods(chart: Chart) -> None:
    docs = chart.render()
    headless = one(docs, "Service", HEADLESS)
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"] == selector_labels("inference")
    pod_labels = workload(docs, "inference")["spec"]["template"]["metadata"]["labels"]
    assert headless["spec"]["selector"].items() <= pod_labels.items()
    assert headless["spec"]["ports"] == [
        {
            "name": "grpc",
            "port": 8021,
            "targetPort": "grpc",
            "protocol": "TCP",
            "appProtocol": "grpc",
        }
    ]
    env = env_of(container(docs, "gateway"))
    assert env["MAAS_GATEWAY_BACKEND_ENDPOINTSLICE"] == HEADLESS
    assert env["MAAS_GATEWAY_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["MAAS_GATEWAY_REGISTRY"] == f"{REGISTRY}.{NAMESPACE}.svc.cluster.local:8011"


def test_dns_and_static_discovery(chart: Chart) -> None:
    env = env_of(container(chart.render(sets=["gateway.discovery.mode=dns"]), "gateway"))
    assert env["MAAS_GATEWAY_BACKEND_DNS"] == f"{HEADLESS}.{NAMESPACE}.svc.cluster.local:8021"
    assert "MAAS_GATEWAY_BACKEND_ENDPOINTSLICE" not in env
    sets = ["gateway.discovery.mode=static", "gateway.discovery.staticBackends={a:8021,b:8021}"]
    env = env_of(container(chart.render(sets=sets), "gateway"))
    assert env["MAAS_GATEWAY_BACKENDS"] == "a:8021,b:8021"


def test_gateway_service_type_is_configurable(chart: Chart) -> None:
    assert one(chart.render(), "Service", GATEWAY)["spec"]["type"] == "ClusterIP"
    docs = chart.render(sets=["gateway.service.type=NodePort", "gateway.service.nodePort=30801"])
    spec = one(docs, "Service", GATEWAY)["spec"]
    assert spec["type"] == "NodePort" and spec["ports"][0]["nodePort"] == 30801
    for name in (INFERENCE, REGISTRY, HEADLESS):
        assert one(docs, "Service", name)["spec"].get("type", "ClusterIP") == "ClusterIP"


def test_rbac_is_read_only_endpointslices_in_the_namespace(chart: Chart) -> None:
    docs = chart.render()
    assert not find(docs, "ClusterRole") and not find(docs, "ClusterRoleBinding")
    (role,) = find(docs, "Role")
    assert role["rules"] == [
        {
            "apiGroups": ["discovery.k8s.io"],
            "resources": ["endpointslices"],
            "verbs": ["get", "list", "watch"],
        }
    ]
    (binding,) = find(docs, "RoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    sa = one(docs, "ServiceAccount", GATEWAY)
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": GATEWAY, "namespace": NAMESPACE}
    ]
    spec = workload(docs, "gateway")["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == sa["metadata"]["name"]
    # No discovery through the API, no Role.
    assert not find(chart.render(sets=["gateway.discovery.mode=dns"]), "Role")


# ---- registry storage, secrets ------------------------------------------------------------


def test_registry_statefulset_keeps_its_data_on_a_pvc(chart: Chart) -> None:
    docs = chart.render()
    sts = workload(docs, "registry")
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["resources"]["requests"]["storage"] == "10Gi"
    mounts = {m["name"]: m["mountPath"] for m in container(docs, "registry")["volumeMounts"]}
    assert env_of(container(docs, "registry"))["MAAS_REGISTRY_DATA_DIR"] == mounts["data"]
    assert one(docs, "Service", sts["spec"]["serviceName"])["spec"]["clusterIP"] == "None"
    kind = workload(chart.render("kind"), "registry")
    assert (
        kind["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "1Gi"
    )
    ephemeral = workload(chart.render(sets=["registry.persistence.enabled=false"]), "registry")
    assert "volumeClaimTemplates" not in ephemeral["spec"]
    assert any(
        v["name"] == "data" and "emptyDir" in v
        for v in ephemeral["spec"]["template"]["spec"]["volumes"]
    )


def test_registry_external_database_from_a_secret(chart: Chart) -> None:
    docs = chart.render("full")
    env = env_of(container(docs, "registry"))
    ref = env["MAAS_REGISTRY_DATABASE_URL"]["secretKeyRef"]
    secret = one(docs, "Secret", ref["name"])
    assert secret["stringData"][ref["key"]].startswith("postgresql://")
    sets = ["registry.database.existingSecret=pg", "registry.database.existingSecretKey=url"]
    docs = chart.render(sets=sets)
    ref = env_of(container(docs, "registry"))["MAAS_REGISTRY_DATABASE_URL"]["secretKeyRef"]
    assert ref == {"name": "pg", "key": "url"}
    assert not find(docs, "Secret", "maas-registry-db")
    assert "MAAS_REGISTRY_DATABASE_URL" not in env_of(container(chart.render(), "registry"))


def test_generated_credentials(chart: Chart) -> None:
    docs = chart.render()
    data = {k: b64decode(v).decode() for k, v in one(docs, "Secret", "maas-auth")["data"].items()}
    assert set(data) == {"admin-token", "reader-token", "api-key", "api-keys.yaml", "service-token"}
    assert len({data["admin-token"], data["reader-token"], data["api-key"]}) == 3
    keys = yaml.safe_load(data["api-keys.yaml"])
    digest = hashlib.sha256(data["api-key"].encode()).hexdigest()
    assert keys == {"keys": [{"id": "default", "sha256": digest}]}
    assert data["api-key"] not in data["api-keys.yaml"], "the gateway's file holds only hashes"

    reg = env_of(container(docs, "registry"))
    assert reg["MAAS_REGISTRY_ADMIN_TOKEN"]["secretKeyRef"] == {
        "name": "maas-auth",
        "key": "admin-token",
    }
    assert reg["MAAS_REGISTRY_READER_TOKEN"]["secretKeyRef"] == {
        "name": "maas-auth",
        "key": "reader-token",
    }
    for component in ("gateway", "inference"):
        env = env_of(container(docs, component))
        name = f"MAAS_{component.upper()}_REGISTRY_TOKEN"
        assert env[name]["secretKeyRef"] == {"name": "maas-auth", "key": "reader-token"}
    gateway = container(docs, "gateway")
    keys_file = env_of(gateway)["MAAS_GATEWAY_API_KEYS_FILE"]
    mount = next(m for m in gateway["volumeMounts"] if keys_file.startswith(m["mountPath"] + "/"))
    volumes = workload(docs, "gateway")["spec"]["template"]["spec"]["volumes"]
    secret_volume = next(v for v in volumes if v["name"] == mount["name"])["secret"]
    assert secret_volume["secretName"] == "maas-auth"
    assert secret_volume["items"] == [{"key": "api-keys.yaml", "path": keys_file.rsplit("/", 1)[1]}]


def test_existing_secrets_replace_generated_ones(chart: Chart) -> None:
    docs = chart.render("full")
    assert not find(docs, "Secret", "maas-auth")
    reg = env_of(container(docs, "registry"))
    assert reg["MAAS_REGISTRY_ADMIN_TOKEN"]["secretKeyRef"]["name"] == "registry-tokens"
    volumes = workload(docs, "gateway")["spec"]["template"]["spec"]["volumes"]
    assert any(v.get("secret", {}).get("secretName") == "gateway-keys" for v in volumes)


def test_auth_off_is_explicit(chart: Chart) -> None:
    sets = [
        "gateway.auth.enabled=false",
        "registry.auth.enabled=false",
        "inference.auth.enabled=false",
    ]
    docs = chart.render(sets=sets)
    assert not find(docs, "Secret", "maas-auth")
    assert env_of(container(docs, "gateway"))["MAAS_GATEWAY_NO_AUTH"] == "true"
    assert env_of(container(docs, "registry"))["MAAS_REGISTRY_NO_AUTH"] == "true"
    assert "MAAS_INFERENCE_REGISTRY_TOKEN" not in env_of(container(docs, "inference"))


# ---- hooks: seed Job and helm test ------------------------------------------------------


def test_seed_job_registers_the_demo_model_after_install(chart: Chart) -> None:
    job = one(chart.render(), "Job", "maas-seed")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install"
    spec = job["spec"]["template"]["spec"]
    (register,) = spec["containers"]
    registry = f"{REGISTRY}.{NAMESPACE}.svc.cluster.local:8011"
    assert register["command"] == [
        "maas", "models", "register", "digits", "/opt/maas/models/digits.onnx",
        "--alias", "production", "--registry", registry,
    ]  # fmt: skip
    assert env_of(register)["MAAS_TOKEN"]["secretKeyRef"] == {
        "name": "maas-auth",
        "key": "admin-token",
    }
    (wait,) = spec["initContainers"]
    assert wait["command"][:3] == ["python", "/scripts/wait_ready.py", registry]
    assert register["image"] == wait["image"] == "maas:0.1.0"
    full = one(chart.render("full"), "Job", "maas-seed")
    assert full["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"


def test_helm_test_pod_calls_the_gateway(chart: Chart) -> None:
    docs = chart.render()
    pod = one(docs, "Pod", "maas-test")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (c,) = pod["spec"]["containers"]
    assert c["command"][:3] == [
        "python",
        "/scripts/smoke_test.py",
        f"{GATEWAY}.{NAMESPACE}.svc.cluster.local:8001",
    ]
    assert env_of(c)["MAAS_API_KEY"]["secretKeyRef"] == {"name": "maas-auth", "key": "api-key"}
    scripts = one(docs, "ConfigMap", "maas-scripts")["data"]
    for name in ("wait_ready.py", "smoke_test.py", "tls_channel.py"):
        assert scripts[name] == (CHART / "files" / name).read_text()


# ---- observability ---------------------------------------------------------------------


def test_otel_only_with_an_endpoint(chart: Chart) -> None:
    for component in SERVICES:
        assert not any(k.startswith("OTEL_") for k in env_of(container(chart.render(), component)))
        env = env_of(container(chart.render("full"), component))
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability:4317"
        assert env["OTEL_SERVICE_NAME"] == f"maas-{component}"
        assert env["OTEL_TRACES_SAMPLER"] == "always_on"
        assert env["OTEL_TRACES_SAMPLER_ARG"] == "1"


def test_service_monitors_off_by_default(chart: Chart) -> None:
    assert not find(chart.render(), "ServiceMonitor")
    docs = chart.render("full")
    monitors = find(docs, "ServiceMonitor")
    assert len(monitors) == 3
    for monitor in monitors:
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["metadata"]["labels"]["release"] == "prometheus"
        selected = [
            s
            for s in find(docs, "Service")
            if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
        ]
        assert len(selected) == 1 and selected[0]["spec"]["ports"][0]["name"] == "metrics"
        assert selected[0]["spec"]["type"] == "ClusterIP"


# ---- labels, names, defaults that must agree with the images -----------------------------


@pytest.mark.parametrize("values", ["default", "full"])
def test_standard_labels_everywhere(chart: Chart, values: str) -> None:
    required = {
        "app.kubernetes.io/name",
        "app.kubernetes.io/instance",
        "app.kubernetes.io/version",
        "app.kubernetes.io/managed-by",
        "app.kubernetes.io/component",
        "app.kubernetes.io/part-of",
        "helm.sh/chart",
    }
    for doc in chart.render(values):
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        assert required <= set(doc["metadata"]["labels"]), where


def test_default_image_matches_make_images() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    chart_meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert chart_meta["appVersion"] == version, "appVersion is the default image tag"
    makefile = (ROOT / "Makefile").read_text()
    repo = re.search(r"^IMAGE_REPO \?= (\S+)$", makefile, re.M)
    assert repo and repo.group(1) == values["image"]["repository"]
    assert values["image"]["tag"] == ""  # so the tag follows appVersion
    assert "$(IMAGE_REPO):$(IMAGE_TAG)-gpu" in makefile


def test_schema_rejects_unknown_keys(chart: Chart) -> None:
    assert "additional properties" in chart.fail(sets=["gateway.replica=3"])
    # More than one registry pod needs the object store (test_helm_scale_out.py).
    assert "registry/objectStore/url" in chart.fail(sets=["registry.replicas=2"])
