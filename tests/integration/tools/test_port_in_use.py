"""A taken port, gRPC or metrics, on any service: one line naming it and its flag, status 2."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import ROOT


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port the OS chose, held by a listening socket (dual-stack, like `[::]`)."""
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::", 0))
        sock.listen()
        yield sock.getsockname()[1]


def service_args(service: str, test_models: Path, tmp_path: Path) -> list[str]:
    if service == "registry":
        return ["--data-dir", str(tmp_path / "registry"), "--no-auth"]
    if service == "inference":
        return ["--model-repository", str(test_models)]
    return ["--backends", "localhost:1", "--no-auth"]


@pytest.mark.parametrize("flag", ["--port", "--metrics-port"])
@pytest.mark.parametrize("service", ["registry", "inference", "gateway"])
def test_a_taken_port_is_one_line_and_status_2(
    service: str, flag: str, taken_port: int, test_models: Path, tmp_path: Path
) -> None:
    ports = {"--port": "0", "--metrics-port": "0", flag: str(taken_port)}
    command = [
        sys.executable,
        "-m",
        f"services.{service}.main",
        *service_args(service, test_models, tmp_path),
        *(item for pair in ports.items() for item in pair),
        "--log-level",
        "ERROR",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAAS_")}
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=90, env=env)
    setting = flag.removeprefix("--").replace("-", "_").upper()
    expected = (
        f"maas-{service}: port {taken_port} is in use "
        f"(change it with {flag} or MAAS_{service.upper()}_{setting})"
    )
    assert (result.returncode, result.stderr.strip()) == (2, expected), result.stdout


def test_maas_up_names_its_own_flag(taken_port: int, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "tools.cli", "up", "--data-dir", str(tmp_path / "maas")]
    command += ["--registry-port", str(taken_port), "--gateway-port", "0", "--inference-port", "0"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=90)
    expected = (
        f"maas up: registry: port {taken_port} is in use "
        "(change it with --registry-port; metrics use that port + 1000)"
    )
    assert (result.returncode, result.stderr.strip()) == (2, expected), result.stdout


def test_a_taken_http_port_names_its_flag(taken_port: int, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "services.gateway.main", "--backends", "localhost:1"]
    command += ["--no-auth", "--port", "0", "--metrics-port", "0", "--http-port", str(taken_port)]
    command += ["--log-level", "ERROR"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAAS_")}
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=90, env=env)
    expected = (
        f"maas-gateway: port {taken_port} is in use "
        "(change it with --http-port or MAAS_GATEWAY_HTTP_PORT)"
    )
    assert (result.returncode, result.stderr.strip()) == (2, expected), result.stdout


def test_maas_up_names_its_http_port_flag(taken_port: int, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "tools.cli", "up", "--data-dir", str(tmp_path / "maas")]
    command += ["--registry-port", "0", "--gateway-port", "0", "--inference-port", "0"]
    command += ["--gateway-http-port", str(taken_port), "--no-large"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180)
    expected = (
        f"maas up: gateway: its HTTP port {taken_port} is in use "
        "(change it with --gateway-http-port)"
    )
    assert (result.returncode, result.stderr.strip()) == (2, expected), result.stdout
