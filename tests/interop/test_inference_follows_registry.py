"""The inference service in registry mode follows alias moves live, and rides out
a registry outage. Models go in through the `maas models` command line."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as tc

from tests.interop.clients import Loop, pair_inputs
from tests.servers import ServiceProcess

MAAS = [sys.executable, "-m", "tools.cli"]


def maas(registry: ServiceProcess, *args: str) -> str:
    result = subprocess.run(
        [*MAAS, "models", "--registry", registry.address, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def sums(address: str, version: str = "") -> float:
    client = tc.InferenceServerClient(address)
    try:
        return float(
            client.infer("pair", pair_inputs(1.0), model_version=version).as_numpy("sum")[0, 0]
        )
    finally:
        client.close()


def follow(registry: ServiceProcess, tmp_path: Path) -> ServiceProcess:
    """An inference service serving `pair:production` from the registry, cached locally."""
    args = ["--registry", registry.address, "--cache-dir", str(tmp_path / "cache")]
    return ServiceProcess("inference", [*args, "--models", "pair:production"], tmp_path)


def ready(address: str, model: str, version: str) -> bool:
    client = tc.InferenceServerClient(address)
    try:
        return bool(client.is_model_ready(model, version))
    finally:
        client.close()


def wait_for(predicate, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:  # noqa: BLE001 - not there yet
            pass
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_alias_move_switches_versions_without_failing_a_request(
    test_models: Path, tmp_path: Path
) -> None:
    data = tmp_path / "registry"
    registry = ServiceProcess("registry", ["--data-dir", str(data), "--no-auth"], tmp_path)
    maas(
        registry,
        "register",
        "pair",
        str(test_models / "pair" / "1" / "model.onnx"),
        "--alias",
        "production",
    )
    inference = follow(registry, tmp_path)
    try:
        assert sums(inference.address, "production") == 2.0
        loop = Loop(inference.address, "pair", "production")
        maas(registry, "register", "pair", str(test_models / "pair_v2" / "1" / "model.onnx"))
        maas(registry, "alias", "pair", "production", "2")
        wait_for(lambda: sums(inference.address, "production") == 102.0)
        time.sleep(0.5)
        loop.stop()
        assert loop.failures == []
        assert loop.ok > 10
        assert loop.versions == {"1", "2"}
        # v1 is unloaded once nothing points at it.
        wait_for(lambda: not ready(inference.address, "pair", "1"))

        # The registry goes away: inference keeps serving what it has.
        registry.kill()
        for _ in range(5):
            assert sums(inference.address, "production") == 102.0
        # It comes back with the same data, at the address inference follows.
        registry = ServiceProcess(
            "registry",
            ["--data-dir", str(data), "--no-auth", "--port", str(registry.port)],
            tmp_path,
        )
        maas(registry, "alias", "pair", "production", "1")
        wait_for(lambda: sums(inference.address, "production") == 2.0, timeout=60)
        # A restart with the registry down serves from the local cache, no download.
        registry.kill()
        inference.stop()
        inference = follow(registry, tmp_path)
        assert sums(inference.address, "production") == 2.0
        np.testing.assert_equal(sums(inference.address, "1"), 2.0)
    finally:
        inference.stop()
        registry.stop()
