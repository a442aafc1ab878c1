"""Triton's v2 REST infer body, read into one serialized ModelInferRequest.

The body is a JSON header, optionally followed by binary tensors (Triton's binary
tensor data extension: the header is the first `Inference-Header-Content-Length`
bytes, then each binary input's `binary_data_size` bytes in input order). Every
input goes into raw_input_contents, since the protocol forbids mixing raw and typed
inputs: JSON `data` is packed with numpy (services.common.datatypes), BYTES as
length-prefixed elements (services.common.tensors).

The JSON part is built with protobuf, without tensor bytes; raw contents are then
appended as field 7 entries straight from views of the body, so client tensor bytes
are copied once, into the request the gateway forwards.

Outputs are always asked raw from the backend (binary_data_output is not passed on):
the JSON-or-binary choice is made per output here (services.gateway.http.tensor_reply).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from maas_proto.inference import grpc_predict_v2_pb2 as pb

from services.common.datatypes import DATATYPES, DataType, by_name
from services.common.errors import InvalidArgument, ResourceExhausted
from services.common.names import echo
from services.common.tensors import checked_shape, element_count
from services.common.wirefmt import encode_varint
from services.gateway.http.json_data import kind as _kind
from services.gateway.http.json_data import pack
from services.gateway.wire import MAX_FIELDS

HEADER_LENGTH = "inference-header-content-length"
BINARY_SIZE = "binary_data_size"
BINARY_DATA = "binary_data"
BINARY_OUTPUT = "binary_data_output"
CLASSIFICATION = "classification"
# Triton's request timeout, in microseconds: the call's deadline, as a gRPC timeout is.
TIMEOUT = "timeout"
_RAW_INPUT_TAG = encode_varint(7 << 3 | 2)  # ModelInferRequest.raw_input_contents
_LENGTH_PREFIX = 4
# The largest JSON header. Why: JSON costs a Python object per element while it is read,
# holding the GIL. Measured here: 16 MiB of numbers reads in 0.3-0.5 s (the event loop
# stalls up to 0.3 s) with a peak of 180 MB (8M integers) to 245 MB (4M floats); a 64 MiB
# JSON body would cost four times that. Larger tensors go as binary data, read without
# a step per element.
MAX_JSON_BYTES = 16 * 1024 * 1024


class JsonTooLarge(ResourceExhausted):
    """A JSON header over MAX_JSON_BYTES: 413, like a body over the limit."""

    http_status = 413


@dataclass(frozen=True)
class OutputPlan:
    """Which outputs the reply carries as binary: per name, else the request's default."""

    default_binary: bool = False
    binary: Mapping[str, bool] = field(default_factory=dict)

    def is_binary(self, name: str) -> bool:
        """Whether output `name` goes after the JSON header rather than in it."""
        return self.binary.get(name, self.default_binary)


@dataclass(frozen=True)
class InferBody:
    """A REST infer request as the gRPC path takes it, and how to shape the reply."""

    request: bytes
    plan: OutputPlan
    # Seconds from the request's `timeout` parameter, or None.
    timeout: float | None = None


def header_length(value: str | None, body_size: int) -> int | None:
    """The JSON header's length from the `Inference-Header-Content-Length` header, or
    None (the whole body is JSON); InvalidArgument when it is no length in the body."""
    if value is None:
        return None
    text = value.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        raise InvalidArgument(
            f"Inference-Header-Content-Length {echo(value)} is not a length, expected a "
            "number of bytes"
        )
    length = int(text)
    if length > body_size:
        raise InvalidArgument(
            f"Inference-Header-Content-Length is {length} bytes, expected at most the "
            f"body's {body_size}"
        )
    return length


def read_infer(body: bytes, header_len: int | None, model: str, version: str) -> InferBody:
    """The serialized ModelInferRequest for `model` (`version`, "" for the default) that a
    REST body asks for; InvalidArgument naming the tensor, expected against got."""
    view = memoryview(body)
    head = view if header_len is None else view[:header_len]
    if len(head) > MAX_JSON_BYTES:
        raise JsonTooLarge(
            f"the JSON part of the request is {len(head)} bytes, expected at most "
            f"{MAX_JSON_BYTES}: send large tensors as binary data (binary_data_size)"
        )
    doc = _json_object(head)
    request = pb.ModelInferRequest(model_name=model, model_version=version)
    request_id = doc.get("id", "")
    if not isinstance(request_id, str):
        raise InvalidArgument(f"'id' is {_kind(request_id)}, expected a string")
    request.id = request_id
    params = _object(doc.get("parameters", {}), "request 'parameters'")
    default_binary = _flag(params.pop(BINARY_OUTPUT, False), f"parameter '{BINARY_OUTPUT}'")
    timeout = _timeout(params.pop(TIMEOUT, None))
    _set_parameters(request.parameters, params, "request")
    _check_fields(doc, len(params))
    raws = _inputs(doc, request, view, header_len)
    plan = OutputPlan(default_binary, _outputs(doc, request))
    parts: list[bytes | memoryview] = [request.SerializeToString()]
    for raw in raws:
        parts += (_RAW_INPUT_TAG, encode_varint(len(raw)), raw)
    return InferBody(b"".join(parts), plan, timeout)


def _check_fields(doc: Mapping[str, Any], params: int) -> None:
    """Refused here in the request's own terms, not later as a malformed message: the
    gateway forwards a request of at most wire.MAX_FIELDS top-level fields (name,
    version, id, one per parameter and output, two per input)."""
    inputs, outputs = (doc.get(k) for k in ("inputs", "outputs"))
    n_in = len(inputs) if isinstance(inputs, list) else 0
    n_out = len(outputs) if isinstance(outputs, list) else 0
    if 3 + params + 2 * n_in + n_out > MAX_FIELDS:
        raise InvalidArgument(
            f"the request has {n_in} inputs, {n_out} outputs and {params} parameters, "
            f"expected at most {MAX_FIELDS} fields in all (two per input, one per output "
            "and parameter)"
        )


def _timeout(value: object) -> float | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise InvalidArgument(
            f"parameter '{TIMEOUT}' is {_kind(value)}, expected microseconds as an integer > 0"
        )
    return value / 1e6


def _json_object(data: memoryview) -> dict[str, Any]:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgument(f"malformed JSON in the request header: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidArgument(f"the request is {_kind(doc)}, expected a JSON object")
    return doc


def _object(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidArgument(f"{what} is {_kind(value)}, expected a JSON object")
    return dict(value)


def _flag(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidArgument(f"{what} is {_kind(value)}, expected true or false")
    return value


def _set_parameters(target: Any, params: Mapping[str, Any], where: str) -> None:
    """JSON parameters as InferParameter values: bool, int, string or double."""
    for key, value in params.items():
        param = target[key]
        if isinstance(value, bool):
            param.bool_param = value
        elif isinstance(value, int):
            if -(2**63) <= value < 2**63:
                param.int64_param = value
            elif 0 <= value < 2**64:
                param.uint64_param = value
            else:
                raise InvalidArgument(
                    f"{where} parameter {echo(key)}: {value} does not fit 64 bits"
                )
        elif isinstance(value, str):
            param.string_param = value
        elif isinstance(value, float):
            param.double_param = value
        else:
            raise InvalidArgument(
                f"{where} parameter {echo(key)} is {_kind(value)}, expected a boolean, "
                "number or string"
            )


def _list(doc: Mapping[str, Any], key: str, *, required: bool) -> list[Any]:
    value = doc.get(key)
    if value is None and not required:
        return []
    if not isinstance(value, list):
        raise InvalidArgument(
            f"'{key}' is {'missing' if value is None else _kind(value)}, expected a list"
        )
    return value


def _field(entry: Mapping[str, Any], key: str, tensor: str, expected: str) -> Any:
    if key not in entry:
        raise InvalidArgument(f"input {tensor}: '{key}' is missing, expected {expected}")
    return entry[key]


def _inputs(
    doc: Mapping[str, Any], request: pb.ModelInferRequest, body: memoryview, header_len: int | None
) -> list[memoryview | bytes]:
    """Each input's header into `request`, and its raw contents, in input order."""
    offset = len(body) if header_len is None else header_len
    raws: list[memoryview | bytes] = []
    seen: set[str] = set()
    for i, entry in enumerate(_list(doc, "inputs", required=True)):
        if not isinstance(entry, dict):
            raise InvalidArgument(f"inputs[{i}] is {_kind(entry)}, expected a JSON object")
        name = entry.get("name")
        if not isinstance(name, str):
            what = "missing" if name is None else _kind(name)
            raise InvalidArgument(f"inputs[{i}]: 'name' is {what}, expected a string")
        label = echo(name)
        if name in seen:
            raise InvalidArgument(f"input {label} appears more than once")
        seen.add(name)
        datatype = _field(entry, "datatype", label, "a datatype name")
        if not isinstance(datatype, str):
            raise InvalidArgument(
                f"input {label}: 'datatype' is {_kind(datatype)}, expected a string"
            )
        dtype = _datatype(datatype, label)
        shape = _shape(_field(entry, "shape", label, "a list of dimensions"), name)
        count = element_count(shape)
        params = _object(entry.get("parameters", {}), f"input {label}: 'parameters'")
        size = params.pop(BINARY_SIZE, None)
        tensor = request.inputs.add(name=name, datatype=dtype.name, shape=shape)
        _set_parameters(tensor.parameters, params, f"input {label}")
        raw: memoryview | bytes
        if size is not None:
            if "data" in entry:
                raise InvalidArgument(
                    f"input {label}: has both 'data' and {BINARY_SIZE}, expected one"
                )
            raw = _binary(body, offset, size, name, dtype, shape, count)
            offset += len(raw)
        elif "data" in entry:
            raw = pack(entry["data"], name, dtype, shape, count)
        else:
            raise InvalidArgument(
                f"input {label}: has no data, expected 'data' or parameters.{BINARY_SIZE}"
            )
        raws.append(raw)
    if offset != len(body):
        raise InvalidArgument(
            f"the body has {len(body) - offset} bytes after the binary inputs, expected none "
            f"(binary_data_size of the inputs adds up to {offset - (header_len or 0)} bytes)"
        )
    return raws


def _datatype(datatype: str, label: str) -> DataType:
    try:
        return by_name(datatype, tensor=label)
    except InvalidArgument:
        known = ", ".join(d.name for d in DATATYPES)
        raise InvalidArgument(
            f"input {label}: unknown datatype {echo(datatype)}, expected one of {known}"
        ) from None


def _shape(value: object, name: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) for d in value
    ):
        raise InvalidArgument(
            f"input {echo(name)}: 'shape' is {_kind(value)}, expected a list of integers"
        )
    return checked_shape(name, value)


def _binary(
    body: memoryview,
    offset: int,
    size: object,
    name: str,
    dtype: DataType,
    shape: tuple[int, ...],
    count: int,
) -> memoryview:
    label = echo(name)
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidArgument(
            f"input {label}: {BINARY_SIZE} is {_kind(size)}, expected a number of bytes >= 0"
        )
    if offset + size > len(body):
        raise InvalidArgument(
            f"input {label}: {BINARY_SIZE} is {size} bytes, got only {len(body) - offset} "
            "left in the body"
        )
    if dtype.is_bytes:
        if size < count * _LENGTH_PREFIX:
            raise InvalidArgument(
                f"input {label}: {BINARY_SIZE} is {size} bytes, too few for {count} BYTES "
                f"elements, expected at least {count * _LENGTH_PREFIX} (a 4-byte length each)"
            )
    elif size != count * dtype.byte_size:
        raise InvalidArgument(
            f"input {label}: {BINARY_SIZE} is {size} bytes, expected {count * dtype.byte_size} "
            f"({count} {dtype.name} elements of {dtype.byte_size} bytes for shape {list(shape)})"
        )
    return body[offset : offset + size]


def _outputs(doc: Mapping[str, Any], request: pb.ModelInferRequest) -> dict[str, bool]:
    """Requested outputs into `request`; their binary_data choices."""
    binary: dict[str, bool] = {}
    for i, entry in enumerate(_list(doc, "outputs", required=False)):
        if not isinstance(entry, dict):
            raise InvalidArgument(f"outputs[{i}] is {_kind(entry)}, expected a JSON object")
        name = entry.get("name")
        if not isinstance(name, str):
            what = "missing" if name is None else _kind(name)
            raise InvalidArgument(f"outputs[{i}]: 'name' is {what}, expected a string")
        label = echo(name)
        params = _object(entry.get("parameters", {}), f"output {label}: 'parameters'")
        if CLASSIFICATION in params:
            raise InvalidArgument(
                f"output {label}: the classification extension is not supported, expected "
                "the output's tensor (ask without 'classification')"
            )
        if BINARY_DATA in params:
            binary[name] = _flag(params.pop(BINARY_DATA), f"output {label}: '{BINARY_DATA}'")
        tensor = request.outputs.add(name=name)
        _set_parameters(tensor.parameters, params, f"output {label}")
    return binary
