"""The REST explain body as an ExplainRequest, and an ExplainResponse as JSON."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from maas_proto.explain.v1 import explain_pb2

from services.common.errors import InvalidArgument
from services.gateway import wire
from services.gateway.http.explain_json import explanation_json, read_explain


def body(**fields: object) -> bytes:
    doc = {
        "id": "r1",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}],
        "output": "y",
        "target": 2,
        "method": "kernel_shap",
        "background": [
            {"name": "x", "datatype": "FP32", "shape": [2, 3], "data": [[0, 0, 0], [1, 1, 1]]}
        ],
        "parameters": {"max_evaluations": 512, "seed": 7},
    }
    doc.update(fields)
    return orjson.dumps({k: v for k, v in doc.items() if v is not None})


def test_a_body_becomes_the_explain_request_the_router_reads() -> None:
    data = read_explain(body(), "linear", "2")
    assert wire.read_request(data) == wire.Head("linear", "2", "r1")
    request = explain_pb2.ExplainRequest.FromString(data)
    assert (request.output, request.target, request.method) == ("y", 2, "kernel_shap")
    assert request.parameters["max_evaluations"].int64_param == 512
    assert [(t.name, t.datatype, list(t.shape)) for t in request.inputs] == [("x", "FP32", [1, 3])]
    x = np.frombuffer(request.raw_input_contents[0], np.float32)
    np.testing.assert_array_equal(x, [1, 2, 3])
    assert list(request.background[0].shape) == [2, 3]
    rows = np.frombuffer(request.raw_background_contents[0], np.float32)
    np.testing.assert_array_equal(rows, [0, 0, 0, 1, 1, 1])


def test_target_and_background_are_optional() -> None:
    request = explain_pb2.ExplainRequest.FromString(
        read_explain(body(target=None, background=None), "m", "")
    )
    assert not request.HasField("target") and not request.background


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"inputs": None}, "'inputs' is missing, expected a list"),
        ({"method": 3}, "'method' is an integer, expected a string"),
        ({"target": "two"}, "'target' is a string, expected an integer index"),
        ({"target": True}, "'target' is"),
        ({"background": {"x": 1}}, "'background' is an object, expected a list of tensors"),
        (
            {"background": [{"name": "x", "datatype": "FP32", "shape": [2, 3], "data": [1]}]},
            "background: input 'x'",
        ),
        ({"parameters": {"max_evaluations": [1]}}, "parameter 'max_evaluations'"),
    ],
)
def test_bad_bodies_name_the_field(fields: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        read_explain(body(**fields), "m", "")
    assert message in refused.value.message


def test_an_explanation_becomes_json_with_the_input_shapes() -> None:
    reply = explain_pb2.ExplainResponse(
        model_name="digits",
        model_version="3",
        id="r1",
        output="probabilities",
        target=7,
        method="occlusion",
        base_value=0.1,
        output_value=0.9,
        error_estimate=0.0,
        evaluations=64,
    )
    reply.attributions.add(name="input", datatype="FP32", shape=[1, 64])
    reply.raw_attribution_contents.append(np.arange(64, dtype=np.float32).tobytes())
    tokens = reply.attributions.add(name="text.tokens", datatype="BYTES", shape=[2])
    tokens.contents.bytes_contents.extend([b"hello", b"\xff"])
    doc = orjson.loads(
        orjson.dumps(explanation_json(reply.SerializeToString()), option=orjson.OPT_SERIALIZE_NUMPY)
    )
    assert doc["model_name"] == "digits" and doc["model_version"] == "3" and doc["id"] == "r1"
    assert (doc["output"], doc["target"], doc["method"], doc["evaluations"]) == (
        "probabilities",
        7,
        "occlusion",
        64,
    )
    assert (doc["base_value"], doc["output_value"], doc["error_estimate"]) == (0.1, 0.9, 0.0)
    attribution, words = doc["attributions"]
    assert (attribution["name"], attribution["shape"]) == ("input", [1, 64])
    assert attribution["data"] == list(range(64))
    assert words["data"] == ["hello", "\ufffd"]
