"""The chart's scripts (seed Job wait, `helm test`) and the NOTES.txt grpcurl recipe, run
for real against a stand-in KServe v2 server with health and reflection."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from helm_chart import CHART, Chart
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

FILES = CHART / "files"
API_KEY = "test-key"
INPUT_SHAPE = [-1, 64]


class FakeInference(pb_grpc.GRPCInferenceServiceServicer):
    """Just enough of the gateway: API key check, metadata, and a sum per row."""

    def __init__(self) -> None:
        self.infers = 0

    @staticmethod
    def _authorize(context: grpc.ServicerContext) -> None:
        headers = dict(context.invocation_metadata())
        if headers.get("authorization") != f"Bearer {API_KEY}":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "bad or missing API key")

    def ServerReady(self, request, context):  # noqa: N802 (gRPC method name)
        self._authorize(context)
        return pb.ServerReadyResponse(ready=True)

    def ModelMetadata(self, request, context):  # noqa: N802
        self._authorize(context)
        if request.name != "digits":
            context.abort(grpc.StatusCode.NOT_FOUND, f"no model {request.name}")
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name="digits",
            versions=["1"],
            platform="onnxruntime_onnx",
            inputs=[tensor(name="input", datatype="FP32", shape=INPUT_SHAPE)],
            outputs=[tensor(name="logits", datatype="FP32", shape=[-1, 10])],
        )

    def ModelInfer(self, request, context):  # noqa: N802
        self._authorize(context)
        (tensor,) = request.inputs
        rows = int(np.prod(tensor.shape)) // 64
        if request.raw_input_contents:
            data = np.frombuffer(request.raw_input_contents[0], dtype=np.float32)
        else:
            data = np.asarray(tensor.contents.fp32_contents, dtype=np.float32)
        if tensor.name != "input" or data.size != rows * 64 or rows < 1:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad input")
        self.infers += 1
        out = pb.ModelInferResponse.InferOutputTensor(
            name="logits", datatype="FP32", shape=[rows, 10]
        )
        return pb.ModelInferResponse(
            model_name="digits",
            model_version="1",
            outputs=[out],
            raw_output_contents=[np.zeros((rows, 10), np.float32).tobytes()],
        )


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, FakeInference, health.HealthServicer]]:
    servicer = FakeInference()
    health_servicer = health.HealthServicer()
    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, srv)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, srv)
    names = (
        pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
    )
    reflection.enable_server_reflection(names, srv)
    port = srv.add_insecure_port("127.0.0.1:0")
    srv.start()
    yield f"127.0.0.1:{port}", servicer, health_servicer
    srv.stop(grace=None)


def run_script(name: str, *args: str, key: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MAAS_API_KEY"}
    if key is not None:
        env["MAAS_API_KEY"] = key
    return subprocess.run(
        [sys.executable, str(FILES / name), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def test_wait_ready_waits_for_serving(server) -> None:
    target, _, health_servicer = server
    health_servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    proc = run_script("wait_ready.py", target, "--timeout", "1")
    assert proc.returncode == 1 and "NOT_SERVING" in proc.stderr
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    proc = run_script("wait_ready.py", target, "--timeout", "5")
    assert proc.returncode == 0, proc.stderr


def test_wait_ready_gives_up_on_nothing_listening() -> None:
    proc = run_script("wait_ready.py", "127.0.0.1:1", "--timeout", "1")
    assert proc.returncode == 1 and "UNAVAILABLE" in proc.stderr


def test_smoke_test_does_ready_and_one_infer(server) -> None:
    target, servicer, _ = server
    before = servicer.infers
    proc = run_script("smoke_test.py", target, "--model", "digits", "--timeout", "10", key=API_KEY)
    assert proc.returncode == 0, proc.stderr
    assert "ServerReady: ready" in proc.stderr and "'logits': [1, 10]" in proc.stderr
    assert servicer.infers == before + 1


def test_smoke_test_fails_fast_without_the_key(server) -> None:
    target, _, _ = server
    proc = run_script("smoke_test.py", target, "--timeout", "60", key="wrong")
    assert proc.returncode == 1 and "UNAUTHENTICATED" in proc.stderr


def test_smoke_test_retries_then_gives_up(server) -> None:
    target, _, _ = server
    proc = run_script("smoke_test.py", target, "--model", "nope", "--timeout", "1", key=API_KEY)
    assert proc.returncode == 1 and "NOT_FOUND" in proc.stderr and "gave up" in proc.stderr


def notes_text(chart: Chart, tmp_path: Path) -> str:
    """NOTES.txt as `helm install` would print it (rendered through tpl in a chart copy)."""
    copy = tmp_path / "maas"
    shutil.copytree(CHART, copy)
    (copy / "files" / "NOTES.txt").write_text((CHART / "templates" / "NOTES.txt").read_text())
    (copy / "templates" / "zz-notes.yaml").write_text(
        'notes: {{ tpl (.Files.Get "files/NOTES.txt") . | toJson }}\n'
    )
    proc = subprocess.run(
        [chart.helm, "template", "maas", str(copy), "--show-only", "templates/zz-notes.yaml"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)["notes"]


def test_notes_tell_how_to_reach_the_gateway(chart: Chart, tmp_path: Path) -> None:
    notes = notes_text(chart, tmp_path)
    assert "kubectl -n default port-forward svc/maas-gateway 8001:8001" in notes
    assert "inference.GRPCInferenceService/ServerReady" in notes
    assert "inference.GRPCInferenceService/ModelInfer" in notes
    assert "tritonclient.grpc" in notes and "client.infer(" in notes
    assert "helm test maas" in notes


def test_notes_grpcurl_recipe_works(chart: Chart, server, tmp_path: Path) -> None:
    """Run NOTES.txt's grpcurl | jq | grpcurl ModelInfer pipeline against the stand-in."""
    grpcurl = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
    if not shutil.which("jq"):
        pytest.skip("jq is not installed (the recipe needs it; the chart does not)")
    target, servicer, _ = server
    notes = notes_text(chart, tmp_path)
    lines = notes.splitlines()
    start = next(i for i, line in enumerate(lines) if "One ModelInfer of zeros" in line)
    recipe = []
    for line in lines[start + 1 :]:
        if recipe and not line.strip():
            break
        if line.strip():
            recipe.append(line)
    command = "\n".join(recipe).replace("localhost:8001", target).replace("grpcurl ", f"{grpcurl} ")
    before = servicer.infers
    proc = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MAAS_API_KEY": API_KEY},
        check=False,
    )
    assert proc.returncode == 0, f"{command}\n{proc.stderr}"
    assert servicer.infers == before + 1
    assert '"model_name": "digits"' in proc.stdout


def test_notes_tritonclient_snippet_works(chart: Chart, server, tmp_path: Path) -> None:
    """NOTES.txt's tritonclient snippet, in its own process (tritonclient's protobuf
    descriptors clash with our stubs in this one)."""
    target, servicer, _ = server
    notes = notes_text(chart, tmp_path)
    lines = notes.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "import os")
    snippet = []
    for line in lines[start:]:
        if line and not line.startswith("  "):
            break
        snippet.append(line[2:])
    code = "\n".join(snippet).strip().replace("localhost:8001", target)
    before = servicer.infers
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MAAS_API_KEY": API_KEY},
        check=False,
    )
    assert proc.returncode == 0, f"{code}\n{proc.stderr}"
    assert servicer.infers == before + 1
