"""Every container the Helm chart would run, collected from `helm template` for each
value set `make helm-check` renders, so the image tests can hold them against the image.

Nothing here imports services.*: the chart is read as Kubernetes would read it."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "maas"
HELM_CHECK = ROOT / "tools" / "helm-check.sh"
RELEASE = "maas"
NAMESPACE = "maas"
# Volume kinds whose mounts are writable data (the rest are Secrets and ConfigMaps).
DATA_VOLUMES = ("emptyDir", "persistentVolumeClaim")
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job")

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Mount:
    """One volumeMount with what backs it: a volume kind and, for ConfigMaps, the files."""

    path: str
    volume: str
    kind: str
    read_only: bool
    # ConfigMap mounts: file name under `path` -> content, as the kubelet would write them.
    files: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ChartContainer:
    """A container (or initContainer) of one rendered Pod template."""

    value_set: str
    workload: str
    name: str
    init: bool
    image: str
    argv: tuple[str, ...]
    # name -> literal value; None where it comes from valueFrom (Secret, fieldRef).
    env: tuple[tuple[str, str | None], ...]
    ports: tuple[tuple[str, int], ...]
    mounts: tuple[Mount, ...]
    run_as_user: int | None
    run_as_group: int | None
    fs_group: int | None = None

    @property
    def where(self) -> str:
        """Where the container is, for messages: value set, workload and container name."""
        kind = "initContainer" if self.init else "container"
        return f"[{self.value_set}] {self.workload} {kind} {self.name!r}"

    @property
    def program(self) -> str:
        """What runs: the console script, or for `python X.py` the script's path."""
        if self.argv[0] == "python" and len(self.argv) > 1 and self.argv[1].endswith(".py"):
            return self.argv[1]
        return self.argv[0]

    def data_mounts(self) -> tuple[Mount, ...]:
        """The writable data mounts (emptyDir and PVC volumes)."""
        return tuple(m for m in self.mounts if m.kind in DATA_VOLUMES)


def value_sets() -> dict[str, tuple[Path, ...]]:
    """The value files `make helm-check` renders (read from tools/helm-check.sh, so the
    two cannot drift), by label; "values.yaml" is the chart's defaults alone."""
    text = HELM_CHECK.read_text()
    match = re.search(r"for values in (.*?); do", text, re.DOTALL)
    assert match, f"no `for values in ...; do` loop found in {HELM_CHECK}"
    words = match.group(1).replace("\\\n", " ").split()
    sets: dict[str, tuple[Path, ...]] = {}
    for word in words:
        name = word.strip("\"'")
        sets[name or "values.yaml"] = (CHART / name,) if name else ()
    assert "values.yaml" in sets, f"helm-check.sh no longer renders the defaults: {words}"
    return sets


def render(helm: str, values: tuple[Path, ...]) -> list[Manifest]:
    """The objects `helm template` renders for these value files (tests included)."""
    args = [helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    for path in values:
        args += ["--values", str(path)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, f"helm template {values} failed:\n{proc.stderr}"
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def pod_templates(docs: list[Manifest]) -> list[tuple[str, Manifest, list[str]]]:
    """(kind/name, pod spec, PVC template names) for every Pod template rendered."""
    found = []
    for doc in docs:
        kind, name = doc["kind"], doc["metadata"]["name"]
        if kind in WORKLOADS:
            claims = [c["metadata"]["name"] for c in doc["spec"].get("volumeClaimTemplates", [])]
            found.append((f"{kind}/{name}", doc["spec"]["template"]["spec"], claims))
        elif kind == "CronJob":
            spec = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
            found.append((f"{kind}/{name}", spec, []))
        elif kind == "Pod":
            found.append((f"{kind}/{name}", doc["spec"], []))
    return found


def _configmap_files(docs: list[Manifest], volume: Manifest) -> tuple[tuple[str, str], ...]:
    """The files of a ConfigMap the chart renders; () for one the user brings (a CA)."""
    source = volume["configMap"]
    rendered = [
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == source["name"]
    ]
    if not rendered:
        return ()
    data = rendered[0].get("data", {})
    items = source.get("items") or [{"key": k, "path": k} for k in data]
    return tuple((item["path"], data[item["key"]]) for item in items)


def _mounts(docs: list[Manifest], spec: Manifest, claims: list[str], c: Manifest) -> list[Mount]:
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    mounts = []
    for m in c.get("volumeMounts", []):
        name = m["name"]
        if name in volumes:
            volume = volumes[name]
            kind = next(k for k in volume if k != "name")
        else:
            assert name in claims, f"volumeMount {name!r} names no volume or claim template"
            volume, kind = {}, "persistentVolumeClaim"
        files = _configmap_files(docs, volume) if kind == "configMap" else ()
        mounts.append(Mount(m["mountPath"], name, kind, bool(m.get("readOnly")), files))
    return mounts


def _env(c: Manifest) -> tuple[tuple[str, str | None], ...]:
    return tuple(
        (e["name"], e.get("value") if "valueFrom" not in e else None) for e in c.get("env", [])
    )


def containers(value_set: str, docs: list[Manifest]) -> list[ChartContainer]:
    """Every container and initContainer of every Pod template in `docs`."""
    found = []
    for workload, spec, claims in pod_templates(docs):
        pod_sc = spec.get("securityContext") or {}
        for init, key in ((True, "initContainers"), (False, "containers")):
            for c in spec.get(key, []):
                sc = {**pod_sc, **(c.get("securityContext") or {})}
                found.append(
                    ChartContainer(
                        value_set=value_set,
                        workload=workload,
                        name=c["name"],
                        init=init,
                        image=c["image"],
                        argv=tuple(str(a) for a in c.get("command", []) + c.get("args", [])),
                        env=_env(c),
                        ports=tuple(
                            (p.get("name", ""), p["containerPort"]) for p in c.get("ports", [])
                        ),
                        mounts=tuple(_mounts(docs, spec, claims, c)),
                        run_as_user=sc.get("runAsUser"),
                        run_as_group=sc.get("runAsGroup"),
                        fs_group=pod_sc.get("fsGroup"),
                    )
                )
    return found


def all_containers(helm: str) -> list[ChartContainer]:
    """The containers of every value set helm-check renders."""
    found = []
    for label, values in value_sets().items():
        found += containers(label, render(helm, values))
    return found
