"""`helm lint --strict`, and every rendered object validated against the Kubernetes API
schemas (kubernetes-validate, strict: unknown fields fail) for 1.30 and the newest known.
The same checks as `make helm-check`, so `make test` covers them without it."""

from __future__ import annotations

import subprocess

import pytest
import yaml
from helm_chart import CHART, VALUE_SETS, Chart
from kubernetes_validate import utils as kv

OLDEST = "1.30.0"
NEWEST = kv.latest_version()
# Custom resources have no schema in kubernetes-validate; only these may go unchecked
# (and only in the "full" set: defaults, kind and GPU render none).
CUSTOM_RESOURCES = {("monitoring.coreos.com/v1", "ServiceMonitor")}


@pytest.mark.parametrize("values", ["default", "kind", "gpu", "full"])
def test_helm_lint_strict(chart: Chart, values: str) -> None:
    args = [chart.helm, "lint", "--strict", str(CHART)]
    for path in VALUE_SETS[values]:
        args += ["--values", str(path)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, proc.stdout


@pytest.mark.parametrize("version", [OLDEST, NEWEST])
@pytest.mark.parametrize("values", ["default", "kind", "gpu", "full"])
def test_manifests_match_the_kubernetes_schemas(chart: Chart, values: str, version: str) -> None:
    text = chart.template(values, kube_version=version)
    docs = [doc for doc in yaml.safe_load_all(text) if doc]
    assert len(docs) > 15
    problems = []
    for doc in docs:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        try:
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            problems.append(f"ERROR {where}: {path}: {exc.message}")
        except kv.SchemaNotFoundError as exc:
            custom = (doc["apiVersion"], doc["kind"]) in CUSTOM_RESOURCES
            if not (custom and values == "full"):
                problems.append(f"WARN {where}: {exc.message}")
    assert not problems, "\n".join(problems)
