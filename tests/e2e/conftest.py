"""The whole system, started the way a user starts it: `maas up`.

Runs in the second pytest process (with tests/interop): it drives the system
with tritonclient, whose protobufs clash with our stubs.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.servers import ROOT


@dataclass
class System:
    """A running `maas up`: its ports, data folder and, with --auth, its secrets."""

    process: subprocess.Popen[str]
    data: Path
    ports: dict[str, int]
    output: str
    secrets: dict[str, str] = field(default_factory=dict)

    def address(self, name: str) -> str:
        return f"localhost:{self.ports[name]}"

    def pid(self, name: str) -> int:
        return int((self.data / "run" / f"{name}.pid").read_text())

    def maas(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "tools.cli", *args]
        return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(60)


@pytest.fixture(scope="session")
def demo_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits demo exported once per session (maas up reuses an export in its folder)."""
    from tools.digits import train_and_export

    folder = tmp_path_factory.mktemp("digits")
    train_and_export(folder / "model.onnx", holdout_path=folder / "holdout.npz")
    return folder


def start_system(tmp: Path, demo: Path, *extra: str) -> System:
    data = tmp / "maas"
    shutil.copytree(demo, data / "models" / "digits")
    ports_file = tmp / "ports.json"
    command = [
        sys.executable,
        "-m",
        "tools.cli",
        "up",
        "--data-dir",
        str(data),
        "--gateway-port",
        "0",
        "--registry-port",
        "0",
        "--inference-port",
        "0",
        "--ports-file",
        str(ports_file),
        "--no-large",  # digits only: the large demos are tests/integration/demo's
        *extra,
    ]
    log = (tmp / "maas-up.out").open("w")
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 180
    while not ports_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError((tmp / "maas-up.out").read_text())
        time.sleep(0.2)
    time.sleep(0.3)  # the banner is printed right after the ports file
    output = (tmp / "maas-up.out").read_text()
    found = dict(re.findall(r"(admin token|API key) \((?:registry|gateway)\):\s+(\S+)", output))
    return System(process, data, json.loads(ports_file.read_text()), output, found)


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory, demo_export: Path) -> Iterator[System]:
    """`maas up` with its defaults (auth off), two inference replicas, for a module."""
    running = start_system(
        tmp_path_factory.mktemp("system"), demo_export, "--inference-replicas", "2"
    )
    yield running
    running.stop()


def printed_curl(output: str) -> list[str]:
    """The banner's curl line for the demo model, as argv."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip().startswith("curl ")]
    digits = [ln for ln in lines if "/v2/models/digits/infer" in ln]
    assert len(digits) == 1, lines
    return shlex.split(digits[0])


def run_printed_curl(output: str) -> dict[str, object]:
    """Run the banner's digits curl line as printed; its JSON answer."""
    done = subprocess.run(printed_curl(output), capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    answer: dict[str, object] = json.loads(done.stdout)
    return answer
