"""Bad input gets INVALID_ARGUMENT naming the tensor, expected against got."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.utils import InferenceServerException


def pair_inputs(
    a_name: str = "a", b_name: str = "b", datatype: str = "FP32", shape: tuple[int, ...] = (2, 4)
) -> list[tc.InferInput]:
    inputs = []
    for name in (a_name, b_name):
        inp = tc.InferInput(name, list(shape), datatype)
        dtype = np.float32 if datatype == "FP32" else np.int32
        inp.set_data_from_numpy(np.ones(shape, dtype=dtype))
        inputs.append(inp)
    return inputs


def expect(
    client: tc.InferenceServerClient,
    code: str,
    *needles: str,
    model: str = "pair",
    inputs: list[tc.InferInput] | None = None,
    version: str = "",
) -> str:
    with pytest.raises(InferenceServerException) as caught:
        client.infer(model, inputs or pair_inputs(), model_version=version)
    assert caught.value.status() == f"StatusCode.{code}"
    message = caught.value.message()
    for needle in needles:
        assert needle in message, message
    return message


def raw_call(client: tc.InferenceServerClient, request: pb.ModelInferRequest) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        client._client_stub.ModelInfer(request)
    return caught.value


def test_unknown_input_name(client: tc.InferenceServerClient) -> None:
    expect(
        client,
        "INVALID_ARGUMENT",
        "'c'",
        "expected inputs ['a', 'b']",
        inputs=pair_inputs(b_name="c"),
    )


def test_missing_required_input(client: tc.InferenceServerClient) -> None:
    expect(client, "INVALID_ARGUMENT", "missing input 'b'", inputs=pair_inputs()[:1])


def test_wrong_datatype(client: tc.InferenceServerClient) -> None:
    expect(
        client,
        "INVALID_ARGUMENT",
        "input 'a'",
        "INT32",
        "expected FP32",
        inputs=pair_inputs(datatype="INT32"),
    )


def test_wrong_shape(client: tc.InferenceServerClient) -> None:
    expect(
        client,
        "INVALID_ARGUMENT",
        "input 'a'",
        "[2, 5]",
        "expected [-1, 4]",
        inputs=pair_inputs(shape=(2, 5)),
    )
    fixed = tc.InferInput("x", [3, 3], "FP32")
    fixed.set_data_from_numpy(np.ones((3, 3), np.float32))
    expect(
        client, "INVALID_ARGUMENT", "input 'x'", "expected [2, 3]", model="fixed", inputs=[fixed]
    )


def test_shape_that_does_not_match_element_count(client: tc.InferenceServerClient) -> None:
    request = pb.ModelInferRequest(model_name="pair")
    for name in ("a", "b"):
        tensor = request.inputs.add(name=name, datatype="FP32", shape=[2, 4])
        tensor.contents.fp32_contents.extend([1.0] * (7 if name == "a" else 8))
    error = raw_call(client, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'a'" in error.details() and "7 elements, expected 8" in error.details()


def test_raw_bytes_of_wrong_length(client: tc.InferenceServerClient) -> None:
    request = pb.ModelInferRequest(model_name="pair")
    request.inputs.add(name="a", datatype="FP32", shape=[2, 4])
    request.inputs.add(name="b", datatype="FP32", shape=[2, 4])
    request.raw_input_contents.extend([b"\0" * 32, b"\0" * 30])
    error = raw_call(client, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'b'" in error.details() and "30 bytes, expected 32" in error.details()


def test_raw_and_typed_mixed(client: tc.InferenceServerClient) -> None:
    request = pb.ModelInferRequest(model_name="pair")
    request.inputs.add(name="a", datatype="FP32", shape=[1, 4])
    typed = request.inputs.add(name="b", datatype="FP32", shape=[1, 4])
    typed.contents.fp32_contents.extend([1, 2, 3, 4])
    request.raw_input_contents.extend([b"\0" * 16, b"\0" * 16])
    error = raw_call(client, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'b'" in error.details() and "one or the other" in error.details()
    request.raw_input_contents.pop()
    error = raw_call(client, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "1 entries, expected 2" in error.details()


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b"\x05\x00\x00\x00abcd", "declares 5 bytes"),  # length past the end
        (b"\x01\x00\x00\x00abc", "too few for 2 BYTES elements"),  # no room for 2 prefixes
        (b"\x01\x00", "4-byte length prefix"),  # truncated prefix
        (b"\x01\x00\x00\x00a\x01\x00\x00\x00bX", "after the"),  # trailing garbage
    ],
)
def test_malformed_bytes_length_prefixes(
    client: tc.InferenceServerClient, raw: bytes, needle: str
) -> None:
    request = pb.ModelInferRequest(model_name="dt_bytes")
    request.inputs.add(name="x", datatype="BYTES", shape=[1, 2])
    request.raw_input_contents.append(raw)
    error = raw_call(client, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'x'" in error.details() and needle in error.details(), error.details()


def test_unknown_model_and_version(client: tc.InferenceServerClient) -> None:
    expect(client, "NOT_FOUND", "unknown model 'nope'", model="nope")
    expect(client, "NOT_FOUND", "no version '9'", version="9")


def test_model_not_ready_is_unavailable(client: tc.InferenceServerClient) -> None:
    # dt_bytes exists; asking for a version by alias on a directory server is NOT_FOUND,
    # while an unloaded model (see the load/unload test) is UNAVAILABLE.
    expect(client, "NOT_FOUND", "expected a version number or an alias", version="staging")


def test_message_over_the_limit_is_resource_exhausted(client: tc.InferenceServerClient) -> None:
    big = np.zeros((70 * 1024 * 1024 // 16, 4), dtype=np.float32)  # 70 MiB > 64 MiB default
    inputs = [tc.InferInput("a", list(big.shape), "FP32"), tc.InferInput("b", [1, 4], "FP32")]
    inputs[0].set_data_from_numpy(big)
    inputs[1].set_data_from_numpy(np.zeros((1, 4), np.float32))
    with pytest.raises(InferenceServerException) as caught:
        client.infer("pair", inputs)
    assert caught.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
