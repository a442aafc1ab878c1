"""The gateway's request metrics carry a `protocol` label: the front end a request came in by.

A real inference server and gateway; one request over each front end, then the series are
read from the gateway's own /metrics port.
"""

from __future__ import annotations

import asyncio
import http.client
import urllib.request
from collections.abc import Callable
from pathlib import Path

import orjson
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from prometheus_client.parser import text_string_to_metric_families

from services.gateway.main import GatewayServer
from tests.integration.gateway.conftest import (
    StartGateway,
    StartInference,
    backend_address,
    pair_request,
)

KEYS = "keys:\n  - {id: team, key: key-t, rate_per_second: 0.001, burst: 2}\n"
PAIR_JSON = {
    "inputs": [
        {"name": "a", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]},
        {"name": "b", "datatype": "FP32", "shape": [1, 4], "data": [1, 1, 1, 1]},
    ]
}
Sample = tuple[str, dict[str, str], float]
Connect = Callable[[GatewayServer], pb_grpc.GRPCInferenceServiceStub]


def _post(port: int, path: str, body: bytes, headers: dict[str, str]) -> int:
    connection = http.client.HTTPConnection("localhost", port, timeout=30)
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def _scrape(port: int) -> list[Sample]:
    url = f"http://localhost:{port}/metrics"
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def _by_protocol(samples: list[Sample], name: str, **labels: str) -> dict[str, float]:
    """The samples named `name` that have `labels`, summed per protocol label."""
    found: dict[str, float] = {}
    for sample, have, value in samples:
        if sample == name and labels.items() <= have.items():
            found[have["protocol"]] = found.get(have["protocol"], 0.0) + value
    return found


async def test_a_grpc_and_an_http_infer_are_two_series_by_protocol(
    start_inference: StartInference,
    start_gateway: StartGateway,
    connect: Connect,
    tmp_path: Path,
) -> None:
    keys = tmp_path / "keys.yaml"
    keys.write_text(KEYS)
    backend = await start_inference()
    gateway: GatewayServer = await start_gateway(
        backends=backend_address(backend), api_keys_file=str(keys)
    )
    metadata = (("authorization", "Bearer key-t"),)
    await connect(gateway).ModelInfer(pair_request(), metadata=metadata, timeout=10)
    headers = {"authorization": "Bearer key-t", "content-type": "application/json"}
    body = orjson.dumps(PAIR_JSON)
    port = gateway.http_port
    assert await asyncio.to_thread(_post, port, "/v2/models/pair/infer", body, headers) == 200
    # The bucket (burst 2) is empty now: the next HTTP call is refused and counted as http.
    assert await asyncio.to_thread(_post, port, "/v2/models/pair/infer", body, headers) == 429

    samples = await asyncio.to_thread(_scrape, gateway.grpc.metrics_port)
    ok = _by_protocol(samples, "maas_gateway_requests_total", model="pair", code="OK")
    assert ok == {"grpc": 1.0, "http": 1.0}
    refused = _by_protocol(samples, "maas_gateway_requests_total", code="RESOURCE_EXHAUSTED")
    assert refused == {"http": 1.0}
    routed = _by_protocol(samples, "maas_gateway_routed_requests_total", model="pair")
    assert routed == {"grpc": 1.0, "http": 1.0}
    timed = _by_protocol(samples, "maas_gateway_request_duration_seconds_count", model="pair")
    assert timed == {"grpc": 1.0, "http": 1.0}
    limited = _by_protocol(samples, "maas_gateway_rate_limited_requests_total", key="team")
    assert limited == {"http": 1.0}
