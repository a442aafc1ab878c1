"""tritonclient.http infer against the gateway's HTTP port, unchanged: JSON and binary
tensors both ways, each result bit-identical to tritonclient.grpc on the gRPC port."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as tg
import tritonclient.http as th
from tritonclient.utils import InferenceServerException

from tests.interop.clients import HEADERS
from tests.servers import ServiceProcess


@pytest.fixture(scope="module")
def clients(
    gateway: ServiceProcess,
) -> Iterator[tuple[th.InferenceServerClient, tg.InferenceServerClient]]:
    """tritonclient's HTTP client on the gateway's HTTP port, and its gRPC client beside it."""
    http = th.InferenceServerClient(f"localhost:{gateway.http_port}")
    grpc = tg.InferenceServerClient(gateway.address)
    deadline = time.monotonic() + 30
    while not grpc.is_server_ready(headers=HEADERS):
        assert time.monotonic() < deadline, gateway.logs()
        time.sleep(0.1)
    yield http, grpc
    http.close()
    grpc.close()


def digits(rows: int) -> np.ndarray:
    """8x8 'images' with pixel values 0..16, as the digits data set has."""
    rng = np.random.default_rng(7)
    return rng.integers(0, 17, size=(rows, 1, 8, 8)).astype(np.float32)


def grpc_result(
    client: tg.InferenceServerClient, model: str, name: str, array: np.ndarray, output: str
) -> np.ndarray:
    tensor = tg.InferInput(name, list(array.shape), _datatype(array))
    tensor.set_data_from_numpy(array)
    result = client.infer(model, [tensor], headers=HEADERS)
    out = result.as_numpy(output)
    assert out is not None
    return out


def http_result(
    client: th.InferenceServerClient,
    model: str,
    name: str,
    array: np.ndarray,
    output: str,
    *,
    binary_in: bool,
    binary_out: bool,
) -> th.InferResult:
    tensor = th.InferInput(name, list(array.shape), _datatype(array))
    tensor.set_data_from_numpy(array, binary_data=binary_in)
    wanted = th.InferRequestedOutput(output, binary_data=binary_out)
    # A copy: tritonclient.http adds its Inference-Header-Content-Length to the dict it gets.
    return client.infer(model, [tensor], outputs=[wanted], headers=dict(HEADERS), request_id="h-1")


def _datatype(array: np.ndarray) -> str:
    names = {"float32": "FP32", "float16": "FP16", "object": "BYTES", "int64": "INT64"}
    return names[array.dtype.name]


@pytest.mark.parametrize("binary_in", [False, True], ids=["json-in", "binary-in"])
@pytest.mark.parametrize("binary_out", [False, True], ids=["json-out", "binary-out"])
def test_digits_infer_is_bit_identical_to_grpc(
    clients: tuple[th.InferenceServerClient, tg.InferenceServerClient],
    binary_in: bool,
    binary_out: bool,
) -> None:
    http, grpc = clients
    images = digits(16)
    expected = grpc_result(grpc, "cnn", "input", images, "probabilities")
    result = http_result(
        http, "cnn", "input", images, "probabilities", binary_in=binary_in, binary_out=binary_out
    )
    got = result.as_numpy("probabilities")
    assert got is not None and got.dtype == np.float32 and got.shape == (16, 10)
    assert got.tobytes() == expected.tobytes()
    response = result.get_response()
    assert (response["model_name"], response["id"]) == ("cnn", "h-1")
    assert ("parameters" in response["outputs"][0]) == binary_out


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize(
    ("model", "array"),
    [
        ("dt_fp16", np.array([[0.1, -2.5, 65504.0], [1e-3, -0.0, 7.0]], dtype=np.float16)),
        ("dt_int64", np.array([[-(2**63), 2**63 - 1, 0], [1, 2, 3]], dtype=np.int64)),
        ("dt_bytes", np.array([[b"", b"caf\xc3\xa9", b"x" * 30]], dtype=object)),
    ],
    ids=["FP16", "INT64", "BYTES"],
)
def test_fp16_int64_and_bytes_round_trip(
    clients: tuple[th.InferenceServerClient, tg.InferenceServerClient],
    model: str,
    array: np.ndarray,
    binary: bool,
) -> None:
    http, grpc = clients
    expected = grpc_result(grpc, model, "x", array, "y")
    result = http_result(http, model, "x", array, "y", binary_in=binary, binary_out=binary)
    got = result.as_numpy("y")
    assert got is not None and got.shape == expected.shape
    if array.dtype == object:
        # As from Triton: JSON BYTES come back as str, binary ones as bytes.
        texts = [v.encode() if isinstance(v, str) else bytes(v) for v in got.ravel()]
        assert texts == [bytes(v) for v in expected.ravel()]
    else:
        assert got.dtype == expected.dtype and got.tobytes() == expected.tobytes()


def test_errors_reach_tritonclient_with_their_status(
    clients: tuple[th.InferenceServerClient, tg.InferenceServerClient],
) -> None:
    http, _ = clients
    wrong = th.InferInput("input", [2, 1, 8, 7], "FP32")
    wrong.set_data_from_numpy(np.zeros((2, 1, 8, 7), np.float32))
    with pytest.raises(InferenceServerException) as caught:
        http.infer("cnn", [wrong], headers=dict(HEADERS))
    assert caught.value.status() == "400" and "input" in caught.value.message()
    with pytest.raises(InferenceServerException) as caught:
        http.infer("no-such-model", [wrong], headers=dict(HEADERS))
    assert caught.value.status() == "404"
    with pytest.raises(InferenceServerException) as caught:
        http.infer("cnn", [wrong])
    assert caught.value.status() == "401"


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests_and_replies(
    clients: tuple[th.InferenceServerClient, tg.InferenceServerClient], algorithm: str
) -> None:
    http, grpc = clients
    images = digits(4)
    expected = grpc_result(grpc, "cnn", "input", images, "probabilities")
    for binary in (False, True):
        tensor = th.InferInput("input", list(images.shape), "FP32")
        tensor.set_data_from_numpy(images, binary_data=binary)
        wanted = th.InferRequestedOutput("probabilities", binary_data=binary)
        result = http.infer(
            "cnn",
            [tensor],
            outputs=[wanted],
            headers=dict(HEADERS),
            request_compression_algorithm=algorithm,
            response_compression_algorithm=algorithm,
        )
        got = result.as_numpy("probabilities")
        assert got is not None and got.tobytes() == expected.tobytes()
