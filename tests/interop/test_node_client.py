"""A client in another language: Node.js with @grpc/grpc-js and @grpc/proto-loader
from npm, loading proto/ at run time and calling ModelInfer."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.servers import ROOT, ServiceProcess

NODE_DIR = Path(__file__).with_name("node")


@pytest.fixture(scope="session")
def node_client() -> Path:
    """The node script, with its npm dependencies installed from the lock file."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("Node.js and npm are needed for the cross-language client test")
    if not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True,
                       capture_output=True, timeout=300)
    return NODE_DIR / "infer.js"


def run_node(script: Path, address: str, model: str, key: str = "") -> dict[str, object]:
    args = ["node", str(script), address, str(ROOT / "proto"), model]
    result = subprocess.run([*args, key] if key else args, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_node_client_calls_model_infer(node_client: Path, inference: ServiceProcess) -> None:
    response = run_node(node_client, inference.address, "pair")
    assert response["id"] == "from-node"
    assert response["outputs"] == {"sum": [11, 22, 33, 44], "diff": [-9, -18, -27, -36]}
