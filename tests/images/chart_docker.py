"""Running one chart container's program in the image as the chart would: its user,
a read-only root, tmpfs for its data volumes (and no other writable path), its ConfigMap
files at their mount paths, its env (Secret and fieldRef values as placeholders), host
networking."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

from tests.images.chart_containers import ChartContainer

PROBE = Path(__file__).resolve().parent / "image_probe.py"
PROBE_IN_IMAGE = "/probe/image_probe.py"
# What a valueFrom env (a Secret key, the pod's namespace) holds in these runs.
PLACEHOLDER = "chart-agreement-placeholder"
RUN_TIMEOUT = 60


def inspect_config(docker: str, image: str) -> dict[str, Any]:
    """The image's Config (User, ExposedPorts, Env, ...)."""
    proc = subprocess.run(
        [docker, "image", "inspect", image, "--format", "{{json .Config}}"],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, f"docker image inspect {image} failed: {proc.stderr}"
    config: dict[str, Any] = json.loads(proc.stdout)
    return config


def image_env(config: dict[str, Any]) -> dict[str, str]:
    """The image's Config.Env as a mapping."""
    return dict(item.split("=", 1) for item in config.get("Env") or [])


class ImageRunner:
    """`docker run` of the image, each container named (and removed) by this runner."""

    def __init__(self, docker: str, image: str, workdir: Path) -> None:
        self.docker = docker
        self.image = image
        self.workdir = workdir

    def _configmap_volumes(self, c: ChartContainer) -> list[str]:
        """-v flags putting the container's ConfigMap files where the chart mounts them."""
        flags = []
        for i, mount in enumerate(m for m in c.mounts if m.files):
            host = self.workdir / f"{uuid.uuid4().hex[:8]}-{i}"
            host.mkdir(mode=0o755)
            host.chmod(0o755)
            for name, text in mount.files:
                (host / name).write_text(text)
                (host / name).chmod(0o644)
            flags += ["-v", f"{host}:{mount.path}:ro"]
        return flags

    def flags(self, c: ChartContainer, env: bool = True) -> list[str]:
        """The `docker run` flags that make the chart's container here."""
        user = f"{c.run_as_user}:{c.run_as_group}" if c.run_as_group is not None else ""
        flags = ["--network", "host", "--read-only", "--user", user or str(c.run_as_user)]
        # Only the chart's own data volumes: a container that needs a /tmp it lacks fails.
        for path in sorted({m.path for m in c.data_mounts()}):
            flags += ["--tmpfs", path]
        flags += self._configmap_volumes(c)
        if env:
            for name, value in c.env:
                flags += ["-e", f"{name}={PLACEHOLDER if value is None else value}"]
        return flags

    def run(
        self, flags: list[str], entrypoint: str, args: list[str]
    ) -> subprocess.CompletedProcess[str]:
        """One container, removed afterwards (also when it overruns RUN_TIMEOUT)."""
        name = f"maas-chart-agreement-{uuid.uuid4().hex[:12]}"
        cmd = [self.docker, "run", "--rm", "--name", name, *flags, "--entrypoint", entrypoint]
        try:
            return subprocess.run(
                [*cmd, self.image, *args],
                capture_output=True,
                text=True,
                timeout=RUN_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            subprocess.run([self.docker, "rm", "-f", name], capture_output=True, check=False)
            raise

    def help(self, c: ChartContainer) -> subprocess.CompletedProcess[str]:
        """The chart's command line with --help, command[0] as the entrypoint."""
        return self.run(self.flags(c), c.argv[0], [*c.argv[1:], "--help"])

    def probe(self, flags: list[str], *args: str) -> subprocess.CompletedProcess[str]:
        """tests/images/image_probe.py run by the image's python."""
        mount = ["-v", f"{PROBE}:{PROBE_IN_IMAGE}:ro"]
        return self.run([*flags, *mount], "python", [PROBE_IN_IMAGE, *args])

    def dry_run(self, c: ChartContainer) -> subprocess.CompletedProcess[str]:
        """The chart's argv and env up to the program's parse (and settings)."""
        return self.probe(self.flags(c), "dryrun", *c.argv)
