"""The bench's HTTP load generator against a real gateway (processes started the way
`maas bench` starts them), JSON and binary tensor data: every call answered 200."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest

from tools.bench.http_load import HEADER_LENGTH, HttpLoadSpec, infer_body, run_http_load
from tools.bench.servers import Process, batching_config, start_gateway, start_inference

INPUTS = {
    "a": np.arange(1, 5, dtype=np.float32).reshape(1, 4),
    "b": np.ones((1, 4), dtype=np.float32),
}


@pytest.fixture(scope="module")
def gateway() -> Iterator[Process]:
    from tests.conftest import test_repository

    onnx = Path(test_repository()) / "pair" / "1" / "model.onnx"
    backend = start_inference("pair", onnx, batching_config(True))
    try:
        front = start_gateway([backend.address])
        try:
            yield front
        finally:
            front.stop()
    finally:
        backend.stop()


def test_binary_bodies_carry_the_json_header_length_and_the_raw_tensors() -> None:
    body = infer_body(INPUTS, "binary")
    headers = dict(body.headers)
    size = int(headers[HEADER_LENGTH])
    header = orjson.loads(body.data[:size])
    assert [t["parameters"]["binary_data_size"] for t in header["inputs"]] == [16, 16]
    assert body.data[size:] == INPUTS["a"].tobytes() + INPUTS["b"].tobytes()
    assert orjson.loads(infer_body(INPUTS, "json").data)["inputs"][0]["data"] == [1, 2, 3, 4]


@pytest.mark.parametrize("encoding", ["json", "binary"])
def test_the_http_load_is_answered_without_errors(gateway: Process, encoding: str) -> None:
    url = f"http://{gateway.http_address}/v2/models/pair/infer"
    body = infer_body(INPUTS, "json" if encoding == "json" else "binary")
    spec = HttpLoadSpec(url, (body,), concurrency=2, seconds=0.5, warmup=0.1, processes=1)
    result = run_http_load(spec)
    assert result.errors == {}
    assert result.latencies  # calls completed inside the window
    assert result.cpu_seconds > 0
