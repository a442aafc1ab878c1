"""The REST infer codec: JSON and binary tensors into one ModelInferRequest, and back."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
from maas_proto.inference import grpc_predict_v2_pb2 as pb

from services.common.datatypes import DATATYPES, DataType, by_name
from services.common.errors import Internal, InvalidArgument
from services.common.tensors import decode, encode_bytes_elements
from services.gateway import wire
from services.gateway.http.tensor_json import (
    MAX_JSON_BYTES,
    JsonTooLarge,
    OutputPlan,
    header_length,
    read_infer,
)
from services.gateway.http.tensor_reply import split_raw, write_reply


def sample(dtype: DataType, shape: tuple[int, ...] = (2, 3)) -> np.ndarray:
    """Values of every datatype that test its edges: extremes, fractions, UTF-8 text."""
    count = int(np.prod(shape))
    if dtype.is_bytes:
        values: list[Any] = ["", "a", "héllo", "x" * 40, "\u2603", "end"]
        return np.array((values * count)[:count], dtype=object).reshape(shape)
    if dtype.numpy.kind == "b":
        return (np.arange(count) % 2 == 0).reshape(shape)
    if dtype.numpy.kind in "iu":
        info = np.iinfo(dtype.numpy)
        values = [info.min, info.max, 0, 1, info.max - 1, info.min + 1]
        return np.array((values * count)[:count], dtype=dtype.numpy).reshape(shape)
    values = [0.1, -2.5, 1e-3, 65504.0 if dtype.name == "FP16" else 3.0e38, -0.0, 7.0]
    return np.array((values * count)[:count], dtype=dtype.numpy).reshape(shape)


def json_data(array: np.ndarray, *, nested: bool) -> Any:
    if array.dtype == object:
        flat = [str(v) for v in array.ravel()]
        return np.array(flat, dtype=object).reshape(array.shape).tolist() if nested else flat
    values = array if nested else array.ravel()
    return values.astype(np.float64).tolist() if array.dtype.kind == "f" else values.tolist()


def raw_of(array: np.ndarray, dtype: DataType) -> bytes:
    if dtype.is_bytes:
        return encode_bytes_elements(array)
    return np.ascontiguousarray(array, dtype=dtype.numpy).tobytes()


def parsed(body: bytes, header_len: int | None = None) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest()
    request.ParseFromString(read_infer(body, header_len, "m", "").request)
    return request


def body_of(doc: dict[str, Any], *binary: bytes) -> tuple[bytes, int | None]:
    header = orjson.dumps(doc)
    if not binary:
        return header, None
    return header + b"".join(binary), len(header)


def one_input(**fields: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], **fields}]}


def refusal(body: bytes, header_len: int | None = None) -> str:
    with pytest.raises(InvalidArgument) as caught:
        read_infer(body, header_len, "m", "")
    return caught.value.message


@pytest.mark.parametrize("dtype", DATATYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("nested", [False, True], ids=["flat", "nested"])
def test_json_data_of_every_datatype_becomes_its_raw_contents(
    dtype: DataType, nested: bool
) -> None:
    array = sample(dtype)
    doc = {
        "inputs": [
            {
                "name": "x",
                "datatype": dtype.name,
                "shape": [2, 3],
                "data": json_data(array, nested=nested),
            }
        ]
    }
    request = parsed(orjson.dumps(doc))
    assert request.model_name == "m"
    assert request.inputs[0].datatype == dtype.name and list(request.inputs[0].shape) == [2, 3]
    assert request.raw_input_contents[0] == raw_of(array, dtype)


@pytest.mark.parametrize("dtype", DATATYPES, ids=lambda d: d.name)
def test_binary_inputs_of_every_datatype_pass_as_sent(dtype: DataType) -> None:
    array = sample(dtype)
    raw = raw_of(array, dtype)
    doc = {
        "inputs": [
            {"name": "j", "datatype": "INT32", "shape": [2], "data": [1, 2]},
            {
                "name": "x",
                "datatype": dtype.name,
                "shape": [2, 3],
                "parameters": {"binary_data_size": len(raw)},
            },
            {"name": "y", "datatype": "UINT8", "shape": [3], "parameters": {"binary_data_size": 3}},
        ]
    }
    request = parsed(*body_of(doc, raw, b"\x01\x02\x03"))
    assert list(request.raw_input_contents) == [
        np.array([1, 2], "<i4").tobytes(),
        raw,
        b"\x01\x02\x03",
    ]
    assert not request.inputs[1].parameters  # binary_data_size is the extension's, not the model's
    got = decode(request.inputs[1], request.raw_input_contents[1])
    assert got.shape == array.shape


def test_request_fields_parameters_and_outputs_are_kept() -> None:
    doc = {
        "id": "req-1",
        "parameters": {
            "binary_data_output": True,
            "priority": 2,
            "tag": "a",
            "ratio": 0.5,
            "flag": False,
        },
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [1], "data": [1], "parameters": {"p": 1}}
        ],
        "outputs": [
            {"name": "a", "parameters": {"binary_data": False}},
            {"name": "b", "parameters": {"k": "v"}},
        ],
    }
    body = read_infer(orjson.dumps(doc), None, "m", "3")
    request = pb.ModelInferRequest()
    request.ParseFromString(body.request)
    assert (request.model_name, request.model_version, request.id) == ("m", "3", "req-1")
    assert wire.read_request(body.request) == wire.Head("m", "3", "req-1")
    params = request.parameters
    assert "binary_data_output" not in params  # outputs come raw; the reply decides per output
    assert params["priority"].int64_param == 2 and params["tag"].string_param == "a"
    assert params["ratio"].double_param == 0.5 and params["flag"].HasField("bool_param")
    assert request.inputs[0].parameters["p"].int64_param == 1
    assert [o.name for o in request.outputs] == ["a", "b"]
    assert request.outputs[1].parameters["k"].string_param == "v"
    assert not body.plan.is_binary("a") and body.plan.is_binary("b") and body.plan.is_binary("c")


def test_timeout_parameter_is_the_deadline_in_microseconds() -> None:
    body = read_infer(
        orjson.dumps({"parameters": {"timeout": 2500000}, **one_input(data=[1, 2])}), None, "m", ""
    )
    assert body.timeout == 2.5
    request = pb.ModelInferRequest()
    request.ParseFromString(body.request)
    assert "timeout" not in request.parameters
    assert "'timeout'" in refusal(
        orjson.dumps({"parameters": {"timeout": "soon"}, **one_input(data=[1, 2])})
    )


def test_header_length_is_checked_against_the_body() -> None:
    assert header_length(None, 10) is None
    assert header_length(" 7 ", 10) == 7
    with pytest.raises(InvalidArgument, match="expected at most the body's 10"):
        header_length("11", 10)
    for bad in ("-1", "\u00b2", "1e3", "9" * 30):  # '²' is a digit to str.isdigit, not to int
        with pytest.raises(InvalidArgument, match="is not a length"):
            header_length(bad, 10)


@pytest.mark.parametrize(
    ("doc", "words"),
    [
        (one_input(data=[1, 2, 3]), ["'x'", "3 elements", "expected 2", "[2]"]),
        (one_input(data=[[1], [2, 3]]), ["'x'", "ragged"]),
        (one_input(data=["a", "b"]), ["'x'", "FP32", "expected numbers"]),
        (one_input(data=[True, False]), ["'x'", "expected numbers"]),
        (one_input(data=[None, None]), ["'x'", "expected numbers"]),
        (one_input(), ["'x'", "has no data"]),
        (one_input(shape=[-1]), ["'x'", "negative dimension"]),
        (one_input(shape="2"), ["'x'", "'shape'", "expected a list of integers"]),
        (one_input(shape=[2.0]), ["'x'", "expected a list of integers"]),
        (one_input(datatype="FLOAT"), ["'x'", "unknown datatype 'FLOAT'", "FP32"]),
        ({"inputs": [{"name": "x", "shape": [1], "data": [1]}]}, ["'x'", "'datatype' is missing"]),
        (
            {"inputs": [{"name": "x", "datatype": "FP32", "data": [1]}]},
            ["'x'", "'shape' is missing"],
        ),
        (
            {"inputs": [{"datatype": "FP32", "shape": [1], "data": [1]}]},
            ["inputs[0]", "'name' is missing"],
        ),
        ({"inputs": "x"}, ["'inputs' is a string", "expected a list"]),
        ({}, ["'inputs' is missing"]),
        (
            {"inputs": [{"name": "i", "datatype": "INT8", "shape": [1], "data": [1.5]}]},
            ["'i'", "element 0", "a number, expected an integer for INT8"],
        ),
        (
            {"inputs": [{"name": "i", "datatype": "INT8", "shape": [1], "data": [300]}]},
            ["'i'", "300", "-128..127"],
        ),
        (
            {"inputs": [{"name": "u", "datatype": "UINT8", "shape": [1], "data": [-1]}]},
            ["'u'", "0..255"],
        ),
        (
            {"inputs": [{"name": "b", "datatype": "BOOL", "shape": [1], "data": [1]}]},
            ["'b'", "true or false"],
        ),
        (
            {"inputs": [{"name": "s", "datatype": "BYTES", "shape": [2], "data": ["a", 1]}]},
            ["'s'", "element 1", "expected a string"],
        ),
        (
            {"inputs": [{"name": "s", "datatype": "BYTES", "shape": [1], "data": [["a", "b"]]}]},
            ["'s'", "2 elements", "expected 1"],
        ),
        (
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}] * 2},
            ["'x'", "more than once"],
        ),
        (
            {
                **one_input(data=[1, 2]),
                "outputs": [{"name": "o", "parameters": {"classification": 3}}],
            },
            ["'o'", "classification"],
        ),
        (
            {
                **one_input(data=[1, 2]),
                "outputs": [{"name": "o", "parameters": {"binary_data": "yes"}}],
            },
            ["'o'", "binary_data", "true or false"],
        ),
        (
            {**one_input(data=[1, 2]), "parameters": {"binary_data_output": 1}},
            ["binary_data_output", "true or false"],
        ),
        (
            {**one_input(data=[1, 2]), "parameters": {"nested": {"a": 1}}},
            ["'nested'", "expected a boolean, number or string"],
        ),
        ({**one_input(data=[1, 2]), "id": 7}, ["'id'", "expected a string"]),
        (
            one_input(parameters={"binary_data_size": 8}, data=[1, 2]),
            ["'x'", "both 'data' and binary_data_size"],
        ),
    ],
)
def test_each_bad_request_is_refused_naming_what_was_expected(
    doc: dict[str, Any], words: list[str]
) -> None:
    message = refusal(orjson.dumps(doc))
    for word in words:
        assert word in message


def test_uint64_beyond_int64_is_exact_and_mixed_signs_are_out_of_range() -> None:
    top = 2**64 - 1
    doc = {"inputs": [{"name": "u", "datatype": "UINT64", "shape": [2], "data": [top, 0]}]}
    assert parsed(orjson.dumps(doc)).raw_input_contents[0] == np.array([top, 0], "<u8").tobytes()
    doc["inputs"][0]["data"] = [top, -1]
    assert "value -1 is out of range for UINT64" in refusal(orjson.dumps(doc))
    doc["inputs"][0]["data"] = [top - 1, 0.5]
    assert "element 1 of 'data' is a number" in refusal(orjson.dumps(doc))


def test_json_past_its_cap_is_413_before_it_is_read() -> None:
    header = orjson.dumps(one_input(parameters={"binary_data_size": 8}))
    padded = header + b" " * (MAX_JSON_BYTES - len(header))
    assert len(parsed(padded + b"\x00" * 8, len(padded)).raw_input_contents[0]) == 8
    with pytest.raises(JsonTooLarge) as caught:
        read_infer(b" " + padded + b"\x00" * 8, len(padded) + 1, "m", "")
    assert caught.value.http_status == 413 and "binary data" in caught.value.message


def test_more_tensors_than_the_gateway_forwards_are_refused_as_such() -> None:
    entry = {"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}
    inputs = [{**entry, "name": f"x{i}"} for i in range(2046)]
    body = orjson.dumps({"inputs": inputs, "parameters": {"a": 1}})
    assert wire.read_request(read_infer(body, None, "m", "").request).name == "m"
    message = refusal(orjson.dumps({"inputs": inputs, "parameters": {"a": 1, "b": 2}}))
    assert "2046 inputs, 0 outputs and 2 parameters" in message


def test_malformed_json_is_refused() -> None:
    assert "malformed JSON" in refusal(b'{"inputs": [')
    assert "expected a JSON object" in refusal(b"[1, 2]")
    # The header ends where Inference-Header-Content-Length says, not at the body's end.
    assert "malformed JSON" in refusal(b'{"inputs": []}', 5)


@pytest.mark.parametrize(
    ("size", "sent", "words"),
    [
        (4, 4, ["'x'", "binary_data_size is 4 bytes", "expected 8", "2 FP32 elements"]),
        (8, 4, ["'x'", "binary_data_size is 8 bytes", "got only 4 left"]),
        (8, 12, ["4 bytes after the binary inputs", "expected none"]),
        (-1, 0, ["'x'", "expected a number of bytes >= 0"]),
    ],
)
def test_binary_sizes_are_checked_against_the_shape_and_the_body(
    size: int, sent: int, words: list[str]
) -> None:
    body, header_len = body_of(one_input(parameters={"binary_data_size": size}), b"\x00" * sent)
    message = refusal(body, header_len)
    for word in words:
        assert word in message


def test_binary_data_without_the_header_length_is_refused() -> None:
    body = orjson.dumps(one_input(parameters={"binary_data_size": 8})) + b"\x00" * 8
    assert "malformed JSON" in refusal(body)
    body = orjson.dumps(one_input(parameters={"binary_data_size": 8}))
    assert "got only 0 left" in refusal(body)


def test_bytes_binary_too_short_for_its_length_prefixes_is_refused() -> None:
    doc = {
        "inputs": [
            {"name": "s", "datatype": "BYTES", "shape": [3], "parameters": {"binary_data_size": 8}}
        ]
    }
    assert "at least 12" in refusal(*body_of(doc, b"\x00" * 8))


@pytest.mark.parametrize("field", ["name", "datatype"])
def test_long_client_strings_are_echoed_truncated(field: str) -> None:
    entry = {"name": "x", "datatype": "FLOAT", "shape": [1], field: "n" * 5000}
    message = refusal(orjson.dumps({"inputs": [entry]}))
    assert "(5000 characters)" in message and len(message) < 400


# Replies.


def response_of(arrays: dict[str, np.ndarray], **fields: Any) -> bytes:
    response = pb.ModelInferResponse(model_name="m", model_version="2", **fields)
    for name, array in arrays.items():
        dtype = (
            DATATYPES[[d.numpy for d in DATATYPES].index(array.dtype)]
            if array.dtype != object
            else by_name("BYTES", tensor=name)
        )
        response.outputs.add(name=name, datatype=dtype.name, shape=array.shape)
        response.raw_output_contents.append(raw_of(array, dtype))
    return response.SerializeToString()


def json_values(value: Any, dtype: DataType) -> np.ndarray:
    """As tritonclient.http reads a JSON output."""
    if dtype.is_bytes:
        return np.array([v.encode() for v in value], dtype=object)
    return np.array(value, dtype=dtype.numpy)


@pytest.mark.parametrize("dtype", DATATYPES, ids=lambda d: d.name)
def test_every_datatype_comes_back_exactly_as_json(dtype: DataType) -> None:
    array = sample(dtype)
    reply = write_reply(response_of({"y": array}, id="r"), OutputPlan())
    assert reply.header_length is None and reply.content_type == "application/json"
    doc = orjson.loads(reply.body)
    assert (doc["model_name"], doc["model_version"], doc["id"]) == ("m", "2", "r")
    out = doc["outputs"][0]
    assert (out["name"], out["datatype"], out["shape"]) == ("y", dtype.name, [2, 3])
    got = json_values(out["data"], dtype)
    if dtype.is_bytes:
        assert list(got) == [v.encode() for v in array.ravel()]
    else:
        assert got.tobytes() == np.ascontiguousarray(array).tobytes()  # bit-identical


@pytest.mark.parametrize("dtype", DATATYPES, ids=lambda d: d.name)
def test_every_datatype_comes_back_as_binary_when_asked(dtype: DataType) -> None:
    array = sample(dtype)
    raw = raw_of(array, dtype)
    plan = OutputPlan(False, {"y": True})
    reply = write_reply(response_of({"j": np.array([1, 2], "<i4"), "y": array}), plan)
    assert reply.header_length is not None and reply.content_type == "application/octet-stream"
    doc = orjson.loads(reply.body[: reply.header_length])
    assert doc["outputs"][0]["data"] == [1, 2]
    assert doc["outputs"][1]["parameters"] == {"binary_data_size": len(raw)}
    assert "data" not in doc["outputs"][1]
    assert reply.body[reply.header_length :] == raw


def test_outputs_json_cannot_hold_exactly_go_binary() -> None:
    text = np.array([b"\xff\xfe", b"ok"], dtype=object)
    floats = np.array([np.nan, np.inf, 1.0], dtype="<f4")
    reply = write_reply(response_of({"s": text, "f": floats}), OutputPlan())
    assert reply.header_length is not None
    doc = orjson.loads(reply.body[: reply.header_length])
    sizes = [o["parameters"]["binary_data_size"] for o in doc["outputs"]]
    assert reply.body[reply.header_length :] == encode_bytes_elements(text) + floats.tobytes()
    assert sizes == [len(encode_bytes_elements(text)), 12]


def test_reply_parameters_and_typed_contents_are_read() -> None:
    response = pb.ModelInferResponse(model_name="m", model_version="1")
    response.parameters["seq"].int64_param = 4
    tensor = response.outputs.add(name="y", datatype="INT32", shape=[3])
    tensor.contents.int_contents.extend([1, -2, 3])
    tensor.parameters["k"].string_param = "v"
    doc = orjson.loads(write_reply(response.SerializeToString(), OutputPlan()).body)
    assert doc["parameters"] == {"seq": 4}
    assert doc["outputs"][0] == {
        "name": "y",
        "datatype": "INT32",
        "shape": [3],
        "data": [1, -2, 3],
        "parameters": {"k": "v"},
    }
    binary = write_reply(response.SerializeToString(), OutputPlan(True))
    assert binary.body[binary.header_length :] == np.array([1, -2, 3], "<i4").tobytes()


def test_raw_outputs_are_split_from_the_reply_as_views() -> None:
    response = pb.ModelInferResponse(model_name="m", model_version="1", id="r")
    response.parameters["n"].int64_param = 300  # a varint inside the head
    response.outputs.add(name="a", datatype="FP64", shape=[1])
    response.outputs.add(name="b", datatype="UINT8", shape=[2])
    response.raw_output_contents.extend([np.array([1.5]).tobytes(), b"\x01\x02"])
    head, raws = split_raw(response.SerializeToString())
    assert [bytes(r) for r in raws] == list(response.raw_output_contents)
    rest = pb.ModelInferResponse()
    rest.ParseFromString(head)
    del response.raw_output_contents[:]
    assert rest == response


@pytest.mark.parametrize("data", [b"\x0a\x05ab", b"\x0b", b"\xff" * 11])
def test_an_unreadable_backend_reply_is_internal(data: bytes) -> None:
    with pytest.raises(Internal, match="could not be read"):
        write_reply(data, OutputPlan())
