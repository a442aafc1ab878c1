"""The whole system in containers of one image: a registry, two inference replicas
in registry mode, and a gateway with both replicas as static backends.

No secrets are configured: the registry and the gateway run with `--no-auth`, and
inference without a service token accepts every call, as the services document
for a trusted network. Every port is a distinct free one, never a default one.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import tritonclient.grpc as tc

from tests.images.containers import Container, ContainerSet, free_ports, grpc_serving

HOST = "127.0.0.1"
MODEL = "digits"
REPLICAS = 2
# SIGTERM drain time the services get (--grace-seconds) and what `docker stop -t` allows.
GRACE_SECONDS = 10
ROOT = Path(__file__).resolve().parents[2]
# What `make examples` / `make image-context` export from PyTorch (tools/examples.py).
EXAMPLE = ROOT / ".data" / "model_repository" / MODEL


@dataclass(frozen=True)
class Service:
    """One container and the ports its service listens on."""

    container: Container
    port: int
    metrics_port: int

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"


@dataclass(frozen=True)
class System:
    """The running system: where each part listens."""

    registry: Service
    inference: list[Service]
    gateway: Service
    http_port: int


@dataclass(frozen=True)
class Digits:
    """The exported digits model and its held-out split."""

    model: Path
    images: np.ndarray  # float32 [N, 1, 8, 8], pixel values 0..16
    labels: np.ndarray  # int64 [N]


def digits_files(tmp: Path) -> Digits:
    """The digits export `make image-context` left on the host, or a fresh one in `tmp`.

    The fresh one runs tools.digits in a child process (about 10 s of training), so
    that this process never imports the project's code next to tritonclient.
    """
    model, holdout = EXAMPLE / "1" / "model.onnx", EXAMPLE / "digits_holdout.npz"
    if not (model.is_file() and holdout.is_file()):
        model, holdout = tmp / "digits.onnx", tmp / "digits_holdout.npz"
        subprocess.run(
            [sys.executable, "-m", "tools.digits", "--out", str(model)],
            cwd=ROOT,
            check=True,
            timeout=300,
        )
    with np.load(holdout) as split:
        return Digits(model, split["images"].astype(np.float32), split["labels"])


def start(containers: ContainerSet) -> System:
    """Start all four containers, and wait until each serves."""
    ports = iter(free_ports(3 + 2 * REPLICAS + 3))
    common = ["--host", HOST, "--grace-seconds", str(GRACE_SECONDS)]

    def service(role: str, command: list[str]) -> Service:
        port, metrics = next(ports), next(ports)
        args = [*command, *common, "--port", str(port), "--metrics-port", str(metrics)]
        return Service(containers.run(role, args), port, metrics)

    registry = service("registry", ["maas-registry", "--no-auth"])
    inference = [
        service(f"inference-{n}", ["maas-inference", "--registry", registry.address])
        for n in range(REPLICAS)
    ]
    http_port = next(ports)
    gateway = service(
        "gateway",
        [
            "maas-gateway",
            "--no-auth",
            "--registry",
            registry.address,
            "--backends",
            ",".join(s.address for s in inference),
            "--http-port",
            str(http_port),
        ],
    )
    for part in [registry, *inference, gateway]:
        part.container.wait_serving("gRPC health", partial(grpc_serving, part.address))
    gateway.container.wait_serving("HTTP ready", lambda: http_ok(http_port, "/v2/health/ready"))
    return System(registry, inference, gateway, http_port)


def http_ok(port: int, path: str) -> bool:
    """Whether GET `path` on `port` answers 200."""
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=2) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def maas(*args: str) -> str:
    """The `maas` command line installed next to this Python, run from the host."""
    command = [str(Path(sys.executable).with_name("maas")), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout}{result.stderr}"
    return result.stdout


def model_ready(address: str, version: str) -> bool:
    """Whether the v2 server at `address` reports MODEL `version` ready."""
    client = tc.InferenceServerClient(address)
    try:
        return bool(client.is_model_ready(MODEL, version))
    except Exception:  # noqa: BLE001 - tritonclient raises its own and grpc's errors
        return False
    finally:
        client.close()
