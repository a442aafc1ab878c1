"""A client in another language: Node.js with @grpc/grpc-js and @grpc/proto-loader
from npm, loading proto/ at run time and calling ModelInfer."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.interop.clients import KEY
from tests.servers import ROOT, ServiceProcess

NODE_DIR = Path(__file__).with_name("node")


@pytest.fixture(scope="session")
def node_client() -> Path:
    """The node script, with its npm dependencies installed from the lock file."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("Node.js and npm are needed for the cross-language client test")
    if not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            check=True,
            capture_output=True,
            timeout=300,
        )
    return NODE_DIR / "infer.js"


def run_node(script: Path, address: str, model: str, key: str = "") -> dict[str, object]:
    args = ["node", str(script), address, str(ROOT / "proto"), model]
    result = subprocess.run(
        [*args, key] if key else args, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_node_client_calls_model_infer_on_the_gateway(
    node_client: Path, gateway: ServiceProcess
) -> None:
    response = run_node(node_client, gateway.address, "pair", KEY)
    assert response["id"] == "from-node"
    assert response["model_version"] == "1"
    assert response["outputs"] == {"sum": [11, 22, 33, 44], "diff": [-9, -18, -27, -36]}


def test_node_client_without_a_key_gets_unauthenticated(
    node_client: Path, gateway: ServiceProcess
) -> None:
    args = ["node", str(node_client), gateway.address, str(ROOT / "proto"), "pair"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert json.loads(result.stderr)["code"] == 16  # UNAUTHENTICATED
