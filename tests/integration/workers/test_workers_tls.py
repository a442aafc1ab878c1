"""--workers with --tls-cert: the shared gRPC port is TLS on every worker, and the
supervisor's merged /metrics and /healthz are HTTPS from the same files (issue E)."""

from __future__ import annotations

import asyncio
import ssl
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

from services.common.workers import SharedPort
from services.inference.settings import InferenceSettings
from tests.integration.workers.helpers import StartSupervisor, cnn_request
from tests.tlscerts import Ca


async def test_workers_serve_tls_and_the_merged_metrics_are_https(
    start_supervisor: StartSupervisor, make_repository: Callable[..., Path], tmp_path: Path
) -> None:
    ca = Ca(tmp_path / "ca")
    issued = ca.issue("server")
    repository = make_repository("cnn")
    tls = ["--tls-cert", str(issued.cert), "--tls-key", str(issued.key)]
    settings = InferenceSettings(
        host="localhost",
        port=0,
        metrics_port=0,
        workers=2,
        model_repository=str(repository),
        tls_cert=str(issued.cert),
        tls_key=str(issued.key),
    )
    supervisor = await start_supervisor(
        "inference",
        settings,
        ["--model-repository", str(repository), *tls],
        [SharedPort("port", 0, None)],
    )
    credentials = grpc.ssl_channel_credentials(root_certificates=ca.pem())
    for _ in range(4):  # new connections, whichever worker takes each
        async with grpc.aio.secure_channel(
            f"localhost:{supervisor.bound['port']}",
            credentials,
            options=[("grpc.use_local_subchannel_pool", 1)],
        ) as channel:
            await pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(cnn_request())
    context = ssl.create_default_context(cafile=str(ca.cert))

    def get(path: str) -> tuple[int, str]:
        url = f"https://localhost:{supervisor.metrics_port}{path}"
        with urllib.request.urlopen(url, context=context, timeout=10) as response:
            return int(response.status), response.read().decode()

    assert await asyncio.to_thread(get, "/healthz") == (200, "ok\n")
    _, page = await asyncio.to_thread(get, "/metrics")
    assert 'maas_inference_requests_total{code="OK",model="cnn",version="1"} 4.0' in page
    assert 'maas_worker_up{worker="1"} 1.0' in page
