"""Rendering the chart with `helm template`, and finding objects in what it renders."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "maas"
HERE = Path(__file__).resolve().parent

# Named value sets: the chart's own files, plus one with every optional feature on.
VALUE_SETS: dict[str, tuple[Path, ...]] = {
    "default": (),
    "kind": (CHART / "values-kind.yaml",),
    "gpu": (CHART / "values-gpu.yaml",),
    "full": (HERE / "values-full.yaml",),
}
RELEASE = "maas"
NAMESPACE = "serving"

Manifest = dict[str, Any]


def get_helm() -> str:
    """Path of a helm 3 binary from tools/get-helm.sh; raises when none can be had."""
    proc = subprocess.run(
        ["bash", str(ROOT / "tools" / "get-helm.sh")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0 or not proc.stdout.strip():
        raise RuntimeError(
            f"tools/get-helm.sh could not provide helm (rc={proc.returncode}):\n{proc.stderr}"
        )
    return proc.stdout.strip().splitlines()[-1]


class Chart:
    """Renders the chart with `helm template` (cached per arguments) and finds objects."""

    def __init__(self, helm: str) -> None:
        self.helm = helm
        self._cache: dict[tuple[Any, ...], str] = {}

    def template(
        self,
        values: str = "default",
        sets: Iterable[str] = (),
        kube_version: str | None = None,
    ) -> str:
        """The manifest text for a named value set plus `--set` overrides."""
        key = (values, tuple(sets), kube_version)
        if key not in self._cache:
            args = [self.helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE]
            for path in VALUE_SETS[values]:
                args += ["--values", str(path)]
            for item in sets:
                args += ["--set", item]
            if kube_version:
                args += ["--kube-version", kube_version]
            proc = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
            assert proc.returncode == 0, f"helm template failed:\n{proc.stderr}"
            self._cache[key] = proc.stdout
        return self._cache[key]

    def render(self, values: str = "default", sets: Iterable[str] = ()) -> list[Manifest]:
        """The rendered objects (empty documents dropped)."""
        return [doc for doc in yaml.safe_load_all(self.template(values, sets)) if doc]

    def fail(self, values: str = "default", sets: Iterable[str] = ()) -> str:
        """helm template's error output for values that must be rejected."""
        args = [self.helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE]
        for path in VALUE_SETS[values]:
            args += ["--values", str(path)]
        for item in sets:
            args += ["--set", item]
        proc = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode != 0, "helm template accepted values it should reject"
        return proc.stderr


def find(docs: list[Manifest], kind: str, name: str | None = None) -> list[Manifest]:
    """Objects of a kind (and name, if given)."""
    return [
        doc
        for doc in docs
        if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name)
    ]


def one(docs: list[Manifest], kind: str, name: str) -> Manifest:
    """The single object of that kind and name."""
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def pod_specs(docs: list[Manifest]) -> dict[str, Manifest]:
    """Every pod spec the chart creates, by '<kind>/<name>'."""
    specs = {}
    for doc in docs:
        kind = doc["kind"]
        if kind in ("Deployment", "StatefulSet", "Job"):
            specs[f"{kind}/{doc['metadata']['name']}"] = doc["spec"]["template"]["spec"]
        elif kind == "Pod":
            specs[f"Pod/{doc['metadata']['name']}"] = doc["spec"]
    return specs


def env_of(container: Manifest) -> dict[str, Any]:
    """A container's env as name -> value (or the valueFrom mapping)."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}
