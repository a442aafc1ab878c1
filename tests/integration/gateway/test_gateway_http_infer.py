"""POST /v2/models/{m}[/versions/{v}]/infer through a real gateway and inference server.

Requests are written as curl would send them (http.client, in a thread), and
each answer is checked against the same request over the gateway's gRPC port:
the outputs must be bit-identical.
"""

from __future__ import annotations

import asyncio
import gzip
import http.client
import shutil
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

from services.common.datatypes import DataType, by_name, by_numpy
from services.common.tensors import encode_bytes_elements
from services.gateway.http.tensor_json import MAX_JSON_BYTES
from services.gateway.main import GatewayServer
from tests.integration.gateway.conftest import StartGateway, StartInference, backend_address

Connect = Callable[[GatewayServer], pb_grpc.GRPCInferenceServiceStub]
TYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"]
TYPES += ["FP16", "FP32", "FP64", "BYTES"]
KEYS = """
keys:
  - {id: team-a, key: key-a, models: [pair]}
  - {id: team-b, key: key-b, models: [dt_fp32]}
  - {id: team-c, key: key-c, rate_per_second: 0.01, burst: 2}
"""


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        size = self.headers.get("inference-header-content-length")
        return orjson.loads(self.body if size is None else self.body[: int(size)])

    def binary(self) -> bytes:
        return self.body[int(self.headers["inference-header-content-length"]) :]


def _request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    connection = http.client.HTTPConnection("localhost", port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        data = response.read()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
    finally:
        connection.close()


async def post(
    gateway: GatewayServer, path: str, body: bytes | dict[str, Any], **headers: str
) -> Answer:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    named = {k.replace("_", "-"): v for k, v in headers.items()}
    return await asyncio.to_thread(_request, gateway.http_port, "POST", path, data, named)


def values(dtype: DataType) -> np.ndarray:
    """A [2, 3] tensor of `dtype` with its extremes."""
    if dtype.is_bytes:
        return np.array([["", "a", "héllo"], ["x" * 30, "\u2603", "z"]], dtype=object)
    if dtype.numpy.kind == "b":
        return np.array([[True, False, True], [False, False, True]])
    if dtype.numpy.kind in "iu":
        info = np.iinfo(dtype.numpy)
        return np.array([[info.min, info.max, 0], [1, info.max - 1, 7]], dtype=dtype.numpy)
    top = 65504.0 if dtype.name == "FP16" else 1e30
    return np.array([[0.1, -2.5, top], [-0.0, 1e-3, 7.0]], dtype=dtype.numpy)


def raw_of(array: np.ndarray, dtype: DataType) -> bytes:
    if dtype.is_bytes:
        return encode_bytes_elements(array)
    return np.ascontiguousarray(array, dtype=dtype.numpy).tobytes()


def json_of(array: np.ndarray) -> Any:
    if array.dtype == object:
        return array.tolist()
    return array.astype(np.float64).tolist() if array.dtype.kind == "f" else array.tolist()


def repository(test_models: Path, root: Path, *names: str) -> Path:
    """A model repository of its own (start_inference's default one lies in tmp_path too)."""
    for name in names:
        shutil.copytree(test_models / name, root / name)
    return root


@pytest.fixture
async def system(
    tmp_path: Path,
    test_models: Path,
    start_inference: StartInference,
    start_gateway: StartGateway,
) -> GatewayServer:
    """A gateway without auth over one backend with `pair` (versions 1, 2) and dt_*."""
    root = repository(test_models, tmp_path / "http", *(f"dt_{t.lower()}" for t in TYPES))
    for version in (1, 2):
        (root / "pair" / str(version)).mkdir(parents=True)
        shutil.copy(test_models / "pair" / "1" / "model.onnx", root / "pair" / str(version))
    backend = await start_inference(root)
    return await start_gateway(backends=backend_address(backend))


async def grpc_outputs(
    stub: pb_grpc.GRPCInferenceServiceStub, model: str, inputs: dict[str, np.ndarray]
) -> dict[str, bytes]:
    request = pb.ModelInferRequest(model_name=model)
    for name, array in inputs.items():
        dtype = by_numpy(array.dtype)
        request.inputs.add(name=name, datatype=dtype.name, shape=array.shape)
        request.raw_input_contents.append(raw_of(array, dtype))
    response = await stub.ModelInfer(request)
    return {
        o.name: raw for o, raw in zip(response.outputs, response.raw_output_contents, strict=True)
    }


def output_raw(out: dict[str, Any], dtype: DataType) -> bytes:
    """An output's raw bytes from its JSON data, as tritonclient.http reads it."""
    if dtype.is_bytes:
        return encode_bytes_elements(np.array(out["data"], dtype=object))
    return np.array(out["data"], dtype=dtype.numpy).tobytes()


@pytest.mark.parametrize("name", TYPES)
async def test_every_datatype_as_json_and_binary_matches_grpc(
    system: GatewayServer, connect: Connect, name: str
) -> None:
    dtype = by_name(name, tensor="x")
    array = values(dtype)
    model = f"dt_{name.lower()}"
    expected = (await grpc_outputs(connect(system), model, {"x": array}))["y"]
    path = f"/v2/models/{model}/infer"

    doc = {"inputs": [{"name": "x", "datatype": name, "shape": [2, 3], "data": json_of(array)}]}
    answer = await post(system, path, doc)
    assert answer.status == 200, answer.body
    assert answer.headers["content-type"] == "application/json"
    out = answer.json()["outputs"][0]
    width = 3 if dtype.is_bytes else 6  # dt_bytes is the identity, the others concatenate
    assert (out["name"], out["datatype"], out["shape"]) == ("y", name, [2, width])
    assert output_raw(out, dtype) == expected

    raw = raw_of(array, dtype)
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": name,
                    "shape": [2, 3],
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
        }
    )
    answer = await post(
        system, path, header + raw, inference_header_content_length=str(len(header))
    )
    assert answer.status == 200, answer.body
    assert answer.headers["content-type"] == "application/octet-stream"
    out = answer.json()["outputs"][0]
    assert out["parameters"] == {"binary_data_size": len(expected)}
    assert answer.binary() == expected


async def test_pair_json_infer_as_curl_sends_it(system: GatewayServer, connect: Connect) -> None:
    doc = {
        "id": "curl-1",
        "inputs": [
            {"name": "a", "datatype": "FP32", "shape": [1, 4], "data": [[1, 2, 3, 4]]},
            {"name": "b", "datatype": "FP32", "shape": [1, 4], "data": [1, 1, 1, 1]},
        ],
    }
    answer = await post(system, "/v2/models/pair/infer", doc, x_request_id="r-1")
    assert answer.status == 200, answer.body
    reply = answer.json()
    assert (reply["model_name"], reply["id"]) == ("pair", "curl-1")
    assert answer.headers["x-maas-version"] == reply["model_version"] == "2"
    outputs = {o["name"]: o for o in reply["outputs"]}
    assert outputs["sum"]["data"] == [2, 3, 4, 5] and outputs["sum"]["shape"] == [1, 4]
    assert outputs["diff"]["data"] == [0, 1, 2, 3]

    only_diff = {**doc, "outputs": [{"name": "diff"}], "parameters": {"binary_data_output": True}}
    answer = await post(system, "/v2/models/pair/versions/1/infer", only_diff)
    assert answer.status == 200, answer.body
    assert [o["name"] for o in answer.json()["outputs"]] == ["diff"]
    assert answer.json()["model_version"] == answer.headers["x-maas-version"] == "1"
    assert answer.binary() == np.array([0, 1, 2, 3], "<f4").tobytes()

    pinned = await post(system, "/v2/models/pair/infer", doc, x_maas_version="1")
    assert pinned.headers["x-maas-version"] == pinned.json()["model_version"] == "1"


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_compressed_bodies_are_accepted(system: GatewayServer, encoding: str) -> None:
    doc = {"inputs": [{"name": "x", "datatype": "INT32", "shape": [1, 3], "data": [1, 2, 3]}]}
    data = orjson.dumps(doc)
    body = gzip.compress(data) if encoding == "gzip" else zlib.compress(data)
    answer = await post(system, "/v2/models/dt_int32/infer", body, content_encoding=encoding)
    assert answer.status == 200, answer.body
    assert answer.json()["outputs"][0]["data"] == [1, 2, 3, 1, 2, 3]


@pytest.mark.parametrize(
    ("doc", "words"),
    [
        (b'{"inputs": [', ["malformed JSON"]),
        (
            {"inputs": [{"name": "x", "datatype": "INT32", "shape": [1, 3], "data": [1, 2]}]},
            ["'x'", "2 elements", "expected 3"],
        ),
        (
            {"inputs": [{"name": "x", "datatype": "INT33", "shape": [1, 3], "data": [1, 2, 3]}]},
            ["'x'", "unknown datatype 'INT33'"],
        ),
        (
            {"inputs": [{"name": "x", "datatype": "INT32", "shape": [3], "data": [1, 2, 3]}]},
            ["'x'", "shape"],
        ),
        (
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]},
            ["'x'", "FP32", "INT32"],
        ),
    ],
)
async def test_bad_requests_are_400_naming_the_tensor(
    system: GatewayServer, doc: bytes | dict[str, Any], words: list[str]
) -> None:
    answer = await post(system, "/v2/models/dt_int32/infer", doc)
    assert answer.status == 400, answer.body
    message = orjson.loads(answer.body)["error"]
    for word in words:
        assert word in message


async def test_binary_size_past_the_body_is_400(system: GatewayServer) -> None:
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "INT32",
                    "shape": [1, 3],
                    "parameters": {"binary_data_size": 12},
                }
            ]
        }
    )
    path = "/v2/models/dt_int32/infer"
    answer = await post(
        system, path, header + b"\x00" * 8, inference_header_content_length=str(len(header))
    )
    assert answer.status == 400 and "got only 8 left" in orjson.loads(answer.body)["error"]
    answer = await post(system, path, header, inference_header_content_length="99999")
    assert answer.status == 400 and "Inference-Header-Content-Length" in answer.json()["error"]


async def test_unknown_models_are_404_and_bad_names_400(system: GatewayServer) -> None:
    doc = {"inputs": [{"name": "x", "datatype": "INT32", "shape": [1, 3], "data": [1, 2, 3]}]}
    missing = await post(system, "/v2/models/nope/infer", doc)
    assert missing.status == 404 and "nope" in missing.json()["error"]
    bad_name = await post(system, "/v2/models/a%20b/infer", doc)
    assert bad_name.status == 400 and "invalid model name" in bad_name.json()["error"]


async def test_bodies_over_the_limit_are_413(
    test_models: Path,
    tmp_path: Path,
    start_inference: StartInference,
    start_gateway: StartGateway,
) -> None:
    backend = await start_inference(repository(test_models, tmp_path / "http", "dt_int32"))
    gateway = await start_gateway(backends=backend_address(backend), max_message_bytes=64 * 1024)
    rows = 8000  # 8000 * 3 int32 as JSON: about 100 KB
    data = np.arange(rows * 3).tolist()
    doc = {"inputs": [{"name": "x", "datatype": "INT32", "shape": [rows, 3], "data": data}]}
    answer = await post(gateway, "/v2/models/dt_int32/infer", doc)
    assert answer.status == 413, answer.body
    # Compressed, the same body is small: its inflated size is what counts.
    body = gzip.compress(orjson.dumps(doc))
    assert len(body) < 64 * 1024
    answer = await post(gateway, "/v2/models/dt_int32/infer", body, content_encoding="gzip")
    assert answer.status == 413, answer.body
    small = {"inputs": [{"name": "x", "datatype": "INT32", "shape": [1, 3], "data": [1, 2, 3]}]}
    assert (await post(gateway, "/v2/models/dt_int32/infer", small)).status == 200


async def test_json_past_its_own_cap_is_413(system: GatewayServer) -> None:
    """Below the body limit (64 MiB) but past MAX_JSON_BYTES of JSON (16 MiB)."""
    rows = 32
    data = [[1] * 3] * rows
    doc = orjson.dumps(
        {"inputs": [{"name": "x", "datatype": "INT32", "shape": [rows, 3], "data": data}]}
    )
    answer = await post(system, "/v2/models/dt_int32/infer", doc + b" " * MAX_JSON_BYTES)
    assert answer.status == 413 and "binary data" in answer.json()["error"]
    assert (await post(system, "/v2/models/dt_int32/infer", doc)).status == 200


async def test_keys_are_checked_as_over_grpc(
    test_models: Path,
    start_inference: StartInference,
    start_gateway: StartGateway,
    tmp_path: Path,
) -> None:
    keys = tmp_path / "keys.yaml"
    keys.write_text(KEYS)
    backend = await start_inference(repository(test_models, tmp_path / "http", "dt_fp32", "pair"))
    gateway = await start_gateway(backends=backend_address(backend), api_keys_file=str(keys))
    doc = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}
    path = "/v2/models/dt_fp32/infer"
    missing = await post(gateway, path, doc)
    assert missing.status == 401 and "missing API key" in missing.json()["error"]
    assert (await post(gateway, path, doc, authorization="Bearer wrong")).status == 401
    denied = await post(gateway, path, doc, authorization="Bearer key-a")
    assert denied.status == 403 and "dt_fp32" in denied.json()["error"]
    allowed = await post(gateway, path, doc, authorization="Bearer key-b")
    assert allowed.status == 200 and allowed.json()["outputs"][0]["data"] == [1, 2, 3] * 2
    for _ in range(2):
        assert (await post(gateway, path, doc, authorization="Bearer key-c")).status == 200
    limited = await post(gateway, path, doc, authorization="Bearer key-c")
    assert limited.status == 429 and "rate limit" in limited.json()["error"]
    assert int(limited.headers["retry-after"]) >= 1


async def test_a_bad_pin_or_method_is_refused(system: GatewayServer) -> None:
    doc = {"inputs": [{"name": "x", "datatype": "INT32", "shape": [1, 3], "data": [1, 2, 3]}]}
    path = "/v2/models/dt_int32/infer"
    pinned = await post(system, path, doc, x_maas_version="not a version!")
    assert pinned.status == 400 and "x-maas-version" in pinned.json()["error"]
    wrong_method = await asyncio.to_thread(_request, system.http_port, "GET", path)
    assert wrong_method.status == 405


async def test_large_json_and_binary_bodies_match_grpc(
    system: GatewayServer, connect: Connect
) -> None:
    """Past infer.OFF_LOOP_BYTES both ways, so the conversions run in a thread."""
    shape = [32, 8000]
    array = np.array([f"s{i:07d}" for i in range(32 * 8000)], dtype=object).reshape(shape)
    expected = (await grpc_outputs(connect(system), "dt_bytes", {"x": array}))["y"]
    assert len(expected) > 2**21
    path = "/v2/models/dt_bytes/infer"
    doc = {"inputs": [{"name": "x", "datatype": "BYTES", "shape": shape, "data": array.tolist()}]}
    answer = await post(system, path, doc)
    assert answer.status == 200, answer.body[:200]
    assert output_raw(answer.json()["outputs"][0], by_name("BYTES", tensor="y")) == expected
    raw = raw_of(array, by_name("BYTES", tensor="x"))
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "BYTES",
                    "shape": shape,
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    )
    answer = await post(
        system, path, header + raw, inference_header_content_length=str(len(header))
    )
    assert answer.status == 200, answer.body[:200]
    assert answer.binary() == expected


@pytest.mark.parametrize(
    ("accept", "encoding"),
    [("gzip", "gzip"), ("deflate, gzip;q=0", "deflate"), ("gzip;q=0", None), ("br", None)],
)
async def test_replies_are_compressed_when_asked(
    system: GatewayServer, accept: str, encoding: str | None
) -> None:
    doc = {
        "inputs": [{"name": "x", "datatype": "INT32", "shape": [1, 3], "data": [1, 2, 3]}],
        "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
    }
    answer = await post(system, "/v2/models/dt_int32/infer", doc, accept_encoding=accept)
    assert answer.status == 200, answer.body
    assert answer.headers.get("content-encoding") == encoding
    body = answer.body
    if encoding == "gzip":
        body = gzip.decompress(body)
    elif encoding == "deflate":
        body = zlib.decompress(body)
    size = int(answer.headers["inference-header-content-length"])
    assert orjson.loads(body[:size])["outputs"][0]["parameters"] == {"binary_data_size": 24}
    assert body[size:] == np.array([1, 2, 3, 1, 2, 3], "<i4").tobytes()
