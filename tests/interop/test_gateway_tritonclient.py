"""tritonclient, Triton's official client, pointed at the gateway (servers are subprocesses)."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as tc
from tritonclient.utils import InferenceServerException

from tests.interop.clients import HEADERS
from tests.servers import ServiceProcess


@pytest.fixture
def client(gateway: ServiceProcess) -> Iterator[tc.InferenceServerClient]:
    c = tc.InferenceServerClient(gateway.address)
    deadline = time.monotonic() + 30
    while not c.is_server_ready(headers=HEADERS):
        assert time.monotonic() < deadline, gateway.logs()
        time.sleep(0.1)
    yield c
    c.close()


def pair_inputs(rows: int = 2) -> tuple[list[tc.InferInput], np.ndarray, np.ndarray]:
    a = np.arange(rows * 4, dtype=np.float32).reshape(rows, 4)
    b = np.full((rows, 4), 0.5, dtype=np.float32)
    inputs = [tc.InferInput("a", [rows, 4], "FP32"), tc.InferInput("b", [rows, 4], "FP32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    return inputs, a, b


def test_server_and_model_metadata(client: tc.InferenceServerClient) -> None:
    assert client.is_server_live(headers=HEADERS)
    meta = client.get_server_metadata(headers=HEADERS)
    assert meta.name == "maas" and "binary_tensor_data" in meta.extensions
    assert client.is_model_ready("pair", headers=HEADERS)
    model = client.get_model_metadata("pair", headers=HEADERS)
    assert [(t.name, t.datatype, list(t.shape)) for t in model.inputs] == [
        ("a", "FP32", [-1, 4]),
        ("b", "FP32", [-1, 4]),
    ]
    config = client.get_model_config("cnn", headers=HEADERS).config
    assert config.name == "cnn"
    stats = client.get_inference_statistics("pair", headers=HEADERS)
    assert [s.name for s in stats.model_stats] == ["pair"]


def test_infer(client: tc.InferenceServerClient) -> None:
    inputs, a, b = pair_inputs()
    result = client.infer("pair", inputs, headers=HEADERS, request_id="r-1")
    np.testing.assert_array_equal(result.as_numpy("sum"), a + b)
    np.testing.assert_array_equal(result.as_numpy("diff"), a - b)
    response = result.get_response()
    assert (response.model_version, response.id) == ("1", "r-1")


def test_stream_infer(client: tc.InferenceServerClient) -> None:
    results: queue.Queue[tuple[object, object]] = queue.Queue()
    client.start_stream(
        callback=lambda result, error: results.put((result, error)), headers=HEADERS
    )
    try:
        for i in range(4):
            inputs, _, _ = pair_inputs(rows=1)
            model = "pair" if i != 2 else "no-such-model"
            client.async_stream_infer(model, inputs, request_id=str(i))
        got = [results.get(timeout=20) for _ in range(4)]
    finally:
        client.stop_stream()
    ok = {r.get_response().id for r, e in got if e is None}  # type: ignore[attr-defined]
    errors = [e for _, e in got if e is not None]
    assert ok == {"0", "1", "3"}
    assert len(errors) == 1 and "no-such-model" in str(errors[0])


def test_without_a_key_and_model_load(client: tc.InferenceServerClient) -> None:
    inputs, _, _ = pair_inputs()
    with pytest.raises(InferenceServerException) as caught:
        client.infer("pair", inputs)
    assert caught.value.status() == "StatusCode.UNAUTHENTICATED"
    with pytest.raises(InferenceServerException) as caught:
        client.load_model("pair", headers=HEADERS)
    assert caught.value.status() == "StatusCode.UNIMPLEMENTED"
