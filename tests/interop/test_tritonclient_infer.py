"""The inference service driven by tritonclient, Triton's official client."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as tc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.utils import InferenceServerException

from tests.models import NUMPY_DTYPES
from tests.servers import ServiceProcess

RNG = np.random.default_rng(7)


def sample(datatype: str, shape: tuple[int, ...]) -> np.ndarray:
    """Random values that span the type, so a wrong byte shows."""
    if datatype == "BOOL":
        return RNG.integers(0, 2, shape).astype(np.bool_)
    dtype = np.dtype(NUMPY_DTYPES[datatype])
    if dtype.kind == "f":
        return RNG.standard_normal(shape).astype(dtype) * 100
    info = np.iinfo(dtype)
    return RNG.integers(info.min // 2, info.max // 2, shape, dtype=dtype, endpoint=True)


def ort_run(test_models: Path, model: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The reference: ONNX Runtime itself on the same file and inputs."""
    session = ort.InferenceSession(str(test_models / model / "1" / "model.onnx"))
    return session.run(None, feeds)


def test_live_ready_and_server_metadata(client: tc.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta.name == "maas"
    assert "model_repository" in meta.extensions


def test_model_metadata_comes_from_the_graph(client: tc.InferenceServerClient) -> None:
    assert client.is_model_ready("pair")
    meta = client.get_model_metadata("pair")
    assert meta.platform == "onnxruntime_onnx"
    assert meta.versions == ["1"]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
        ("a", "FP32", [-1, 4]),
        ("b", "FP32", [-1, 4]),
    ]
    assert [t.name for t in meta.outputs] == ["sum", "diff"]
    fixed = client.get_model_metadata("fixed")
    assert [list(t.shape) for t in fixed.inputs] == [[2, 3]]


def test_model_config_has_triton_shape(client: tc.InferenceServerClient) -> None:
    config = client.get_model_config("cnn").config
    assert config.platform == "onnxruntime_onnx"
    assert config.max_batch_size > 0
    assert [list(i.dims) for i in config.input] == [[1, 8, 8]]
    assert config.input[0].data_type == tc.model_config_pb2.TYPE_FP32
    assert config.HasField("dynamic_batching")
    assert config.parameters["execution_provider"].string_value == "CPUExecutionProvider"
    assert client.get_model_config("fixed").config.max_batch_size == 0


@pytest.mark.parametrize("datatype", sorted(NUMPY_DTYPES))
def test_infer_raw_every_datatype_matches_ort_bit_for_bit(
    client: tc.InferenceServerClient, test_models: Path, datatype: str
) -> None:
    model = f"dt_{datatype.lower()}"
    x = sample(datatype, (3, 3))
    inp = tc.InferInput("x", list(x.shape), datatype)
    inp.set_data_from_numpy(x)
    result = client.infer(model, [inp], request_id="req-7")
    got = result.as_numpy("y")
    (want,) = ort_run(test_models, model, {"x": x})
    assert result.get_response().id == "req-7"
    assert got.dtype == want.dtype and got.shape == (3, 6)
    assert got.tobytes() == want.tobytes()


def test_infer_bytes_raw(client: tc.InferenceServerClient) -> None:
    x = np.array([[b"alpha", b""], [b"\xce\xbb", b"z" * 300]], dtype=np.object_)
    inp = tc.InferInput("x", [2, 2], "BYTES")
    inp.set_data_from_numpy(x)
    got = client.infer("dt_bytes", [inp]).as_numpy("y")
    assert got.shape == (2, 2)
    assert [bytes(v) for v in got.ravel()] == [bytes(v) for v in x.ravel()]


TYPED_FIELDS = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}


def typed_request(model: str, name: str, x: np.ndarray, datatype: str) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model)
    tensor = request.inputs.add(name=name, datatype=datatype, shape=list(x.shape))
    getattr(tensor.contents, TYPED_FIELDS[datatype]).extend(x.ravel().tolist())
    request.parameters["binary_data_output"].bool_param = False
    return request


@pytest.mark.parametrize("datatype", sorted(TYPED_FIELDS))
def test_infer_typed_contents_in_and_out(
    client: tc.InferenceServerClient, test_models: Path, datatype: str
) -> None:
    x = sample(datatype, (2, 3))
    model = f"dt_{datatype.lower()}"
    response = client._client_stub.ModelInfer(typed_request(model, "x", x, datatype))
    assert not response.raw_output_contents
    values = getattr(response.outputs[0].contents, TYPED_FIELDS[datatype])
    got = np.array(values, dtype=x.dtype).reshape(response.outputs[0].shape)
    (want,) = ort_run(test_models, model, {"x": x})
    assert got.tobytes() == want.tobytes()


def test_infer_typed_bytes(client: tc.InferenceServerClient) -> None:
    request = pb.ModelInferRequest(model_name="dt_bytes")
    tensor = request.inputs.add(name="x", datatype="BYTES", shape=[1, 2])
    tensor.contents.bytes_contents.extend([b"one", b"two"])
    request.parameters["binary_data_output"].bool_param = False
    response = client._client_stub.ModelInfer(request)
    assert list(response.outputs[0].contents.bytes_contents) == [b"one", b"two"]


def test_output_subset(client: tc.InferenceServerClient) -> None:
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    b = np.ones((2, 4), dtype=np.float32)
    inputs = [tc.InferInput("a", [2, 4], "FP32"), tc.InferInput("b", [2, 4], "FP32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    result = client.infer("pair", inputs, outputs=[tc.InferRequestedOutput("diff")])
    assert [o.name for o in result.get_response().outputs] == ["diff"]
    assert result.as_numpy("sum") is None
    np.testing.assert_array_equal(result.as_numpy("diff"), a - b)


def test_cnn_matches_ort_bit_for_bit(client: tc.InferenceServerClient, test_models: Path) -> None:
    x = RNG.uniform(0, 16, (5, 1, 8, 8)).astype(np.float32)
    inp = tc.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    got = client.infer("cnn", [inp]).as_numpy("probabilities")
    (want,) = ort_run(test_models, "cnn", {"input": x})
    assert got.tobytes() == want.tobytes()


def test_stream_answers_each_request_and_survives_errors(inference: ServiceProcess) -> None:
    import queue

    results: queue.Queue[tuple[object, object]] = queue.Queue()
    client = tc.InferenceServerClient(inference.address)
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        for i in range(6):
            x = np.full((1, 4), i, dtype=np.float32)
            inputs = [tc.InferInput("a", [1, 4], "FP32"), tc.InferInput("b", [1, 4], "FP32")]
            inputs[0].set_data_from_numpy(x)
            inputs[1].set_data_from_numpy(x)
            if i == 3:  # a bad request in the middle: wrong input name
                inputs[1] = tc.InferInput("nope", [1, 4], "FP32")
                inputs[1].set_data_from_numpy(x)
            client.async_stream_infer("pair", inputs, request_id=str(i))
        answers = [results.get(timeout=30) for _ in range(6)]
    finally:
        client.stop_stream()
        client.close()
    ok = {r.get_response().id: r.as_numpy("sum") for r, e in answers if e is None}
    errors = [e for r, e in answers if e is not None]
    assert sorted(ok) == ["0", "1", "2", "4", "5"]
    for key, value in ok.items():
        np.testing.assert_array_equal(value, np.full((1, 4), 2 * int(key), np.float32))
    assert len(errors) == 1 and "nope" in str(errors[0])


def test_statistics_count_requests(client: tc.InferenceServerClient) -> None:
    before = client.get_inference_statistics("fixed").model_stats[0]
    x = np.ones((2, 3), dtype=np.float32)
    inp = tc.InferInput("x", [2, 3], "FP32")
    inp.set_data_from_numpy(x)
    for _ in range(3):
        client.infer("fixed", [inp])
    after = client.get_inference_statistics("fixed").model_stats[0]
    assert after.inference_stats.success.count - before.inference_stats.success.count == 3
    assert after.execution_count - before.execution_count == 3
    with pytest.raises(InferenceServerException):
        client.get_inference_statistics("no_such_model")
