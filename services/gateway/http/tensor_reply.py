"""A backend's ModelInferResponse as Triton's v2 REST reply: JSON, then binary outputs.

Outputs asked as binary (the request's binary_data_output, or an output's own
binary_data) follow the JSON header in output order, each announced by
parameters.binary_data_size; the reply then carries `Inference-Header-Content-Length`.
Other outputs go in the JSON as flat row-major `data` (tritonclient reshapes).

An output JSON cannot carry exactly goes binary even when asked as JSON: BYTES that
are not UTF-8 (Triton writes them into the JSON as they are, which is invalid JSON)
and floats that are NaN or infinite (JSON has no such numbers). tritonclient reads an
output by its binary_data_size whenever one is there, so it gets the exact values
either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from google.protobuf.message import DecodeError
from maas_proto.inference import grpc_predict_v2_pb2 as pb

from services.common.datatypes import by_name
from services.common.errors import Internal, InvalidArgument
from services.common.tensors import encode_bytes_elements, encoded
from services.common.wirefmt import I32, I64, LEN, VARINT, read_varint
from services.gateway.http.tensor_json import BINARY_SIZE, OutputPlan

JSON = "application/json"
OCTET_STREAM = "application/octet-stream"


@dataclass(frozen=True)
class Reply:
    """An infer reply's body; `header_length` is set when binary outputs follow the JSON."""

    body: bytes
    header_length: int | None

    @property
    def content_type(self) -> str:
        """application/octet-stream when binary parts follow the JSON header."""
        return JSON if self.header_length is None else OCTET_STREAM


def write_reply(data: bytes, plan: OutputPlan) -> Reply:
    """The REST reply for a backend's serialized ModelInferResponse."""
    head, raws = split_raw(data)
    response = pb.ModelInferResponse()
    try:
        response.ParseFromString(head)
    except DecodeError:
        raise _unreadable() from None
    doc: dict[str, Any] = {
        "model_name": response.model_name,
        "model_version": response.model_version,
    }
    if response.id:
        doc["id"] = response.id
    if response.parameters:
        doc["parameters"] = parameters(response.parameters)
    outputs: list[dict[str, Any]] = []
    binary: list[bytes | memoryview] = []
    for i, tensor in enumerate(response.outputs):
        raw = raws[i] if i < len(raws) else None
        out: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.shape),
        }
        params = parameters(tensor.parameters)
        values = None
        if not plan.is_binary(tensor.name):
            values = _json_values(tensor, None if raw is None else bytes(raw))
        if values is None:
            content = raw if raw is not None else _raw_of(tensor)
            params[BINARY_SIZE] = len(content)
            binary.append(content)
        else:
            out["data"] = values
        if params:
            out["parameters"] = params
        outputs.append(out)
    doc["outputs"] = outputs
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not binary:
        return Reply(header, None)
    return Reply(b"".join([header, *binary]), len(header))


def _unreadable() -> Internal:
    return Internal("the backend's reply could not be read")


def split_raw(data: bytes) -> tuple[bytes, list[memoryview]]:
    """The reply without its raw_output_contents (field 6), and those as views of `data`.

    Why: parsing the whole reply copies each output twice (into the message, then out
    as bytes) before the body copies it again; as views, an output is copied once,
    into the body. A backend's reply has a few top-level fields, so the scan is short.
    """
    view = memoryview(data)
    head: list[memoryview] = []
    raws: list[memoryview] = []
    pos, end = 0, len(data)
    try:
        while pos < end:
            start = pos
            key, pos = read_varint(data, pos)
            number, kind = key >> 3, key & 7
            if kind == LEN:
                length, pos = read_varint(data, pos)
                stop = pos + length
            elif kind == VARINT:
                _, stop = read_varint(data, pos)
            elif kind in (I64, I32):
                stop = pos + (8 if kind == I64 else 4)
            else:
                raise _unreadable()
            if stop > end:
                raise _unreadable()
            if number == 6 and kind == LEN:
                raws.append(view[pos:stop])
            else:
                head.append(view[start:stop])
            pos = stop
    except InvalidArgument:  # a truncated or overlong varint
        raise _unreadable() from None
    return b"".join(head), raws


def parameters(params: Any) -> dict[str, Any]:
    """An InferParameter map as JSON values."""
    out: dict[str, Any] = {}
    for key, param in params.items():
        choice = param.WhichOneof("parameter_choice")
        if choice is not None:
            out[key] = getattr(param, choice)
    return out


def _json_values(tensor: pb.ModelInferResponse.InferOutputTensor, raw: bytes | None) -> Any:
    """The output's values for the JSON part, or None when JSON cannot hold them exactly."""
    dtype = by_name(tensor.datatype, tensor=tensor.name)
    if dtype.is_bytes:
        flat = encoded(tensor, raw).decode().ravel()
        try:
            return [bytes(item).decode() for item in flat]
        except UnicodeDecodeError:
            return None
    array = encoded(tensor, raw).decode().ravel()
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            return None
        # Exact: float16/32 widen to float64 without rounding, and orjson writes float64
        # in the shortest form that reads back to the same double.
        array = array.astype(np.float64)
    return np.ascontiguousarray(array)


def _raw_of(tensor: pb.ModelInferResponse.InferOutputTensor) -> bytes:
    """Raw contents of an output that came with typed contents."""
    array = encoded(tensor, None).decode()
    dtype = by_name(tensor.datatype, tensor=tensor.name)
    if dtype.is_bytes:
        return encode_bytes_elements(array)
    return np.ascontiguousarray(array, dtype=dtype.numpy).tobytes()
