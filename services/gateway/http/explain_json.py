"""The REST explain body as a serialized ExplainRequest, and an ExplainResponse as JSON.

Tensors are read and written with the infer route's v2 JSON codec
(services.gateway.http.tensor_json, services.gateway.http.tensor_reply), so inputs
and background rows take the same datatypes, shapes and checks as an infer body's
inputs, and attributions come back as an infer reply's outputs do. The body is
JSON only (no binary tensor data): an explanation's input is one example.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError
from maas_proto.explain.v1 import explain_pb2
from maas_proto.inference import grpc_predict_v2_pb2 as pb

from services.common.errors import Internal, InvalidArgument
from services.common.tensors import encoded
from services.gateway.http.json_data import kind
from services.gateway.http.tensor_json import (
    MAX_JSON_BYTES,
    JsonTooLarge,
    _inputs,
    _json_object,
    _object,
    _set_parameters,
)
from services.gateway.http.tensor_reply import _json_values, parameters
from services.gateway.wire import MAX_FIELDS

_STRINGS = ("id", "output", "method")


def read_explain(body: bytes, model: str, version: str) -> bytes:
    """The serialized ExplainRequest for `model` (`version`, "" for the default) that a
    REST explain body asks for; InvalidArgument naming the field, expected against got."""
    if len(body) > MAX_JSON_BYTES:
        raise JsonTooLarge(
            f"the request is {len(body)} bytes, expected at most {MAX_JSON_BYTES} of JSON"
        )
    view = memoryview(body)
    doc = _json_object(view)
    request = explain_pb2.ExplainRequest(model_name=model, model_version=version)
    for name in _STRINGS:
        value = doc.get(name, "")
        if not isinstance(value, str):
            raise InvalidArgument(f"'{name}' is {kind(value)}, expected a string")
        setattr(request, name, value)
    target = doc.get("target")
    if target is not None:
        if not isinstance(target, int) or isinstance(target, bool) or abs(target) >= 2**63:
            raise InvalidArgument(f"'target' is {kind(target)}, expected an integer index")
        request.target = target
    params = _object(doc.get("parameters", {}), "request 'parameters'")
    _set_parameters(request.parameters, params, "request")
    background = doc.get("background")
    if background is not None and not isinstance(background, list):
        raise InvalidArgument(f"'background' is {kind(background)}, expected a list of tensors")
    _check_fields(doc, len(params))
    inputs = pb.ModelInferRequest()
    raws = _inputs(doc, inputs, view, None)
    request.inputs.extend(inputs.inputs)
    request.raw_input_contents.extend(bytes(raw) for raw in raws)
    if background:
        rows = pb.ModelInferRequest()
        try:
            raws = _inputs({"inputs": background}, rows, view, None)
        except InvalidArgument as exc:
            raise InvalidArgument(f"background: {exc.message}") from None
        request.background.extend(rows.inputs)
        request.raw_background_contents.extend(bytes(raw) for raw in raws)
    return request.SerializeToString()


def _check_fields(doc: Mapping[str, Any], params: int) -> None:
    """Refused in the request's own terms rather than later as a malformed message (the
    gateway forwards at most wire.MAX_FIELDS top-level fields)."""
    tensors = sum(len(v) for v in (doc.get("inputs"), doc.get("background")) if isinstance(v, list))
    if 7 + params + 2 * tensors > MAX_FIELDS:
        raise InvalidArgument(
            f"the request has {tensors} tensors and {params} parameters, expected at most "
            f"{MAX_FIELDS} fields in all (two per tensor, one per parameter)"
        )


def explanation_json(data: bytes) -> dict[str, Any]:
    """The REST answer for a backend's serialized ExplainResponse."""
    reply = explain_pb2.ExplainResponse()
    try:
        reply.ParseFromString(data)
    except DecodeError:
        raise Internal("the backend's reply could not be read") from None
    attributions = []
    raws = reply.raw_attribution_contents
    for i, tensor in enumerate(reply.attributions):
        raw = bytes(raws[i]) if i < len(raws) else None
        out: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.shape),
            "data": _values(tensor, raw),
        }
        if tensor.parameters:
            out["parameters"] = parameters(tensor.parameters)
        attributions.append(out)
    doc: dict[str, Any] = {
        "model_name": reply.model_name,
        "model_version": reply.model_version,
        "id": reply.id,
        "attributions": attributions,
        "output": reply.output,
        "target": reply.target,
        "method": reply.method,
        "base_value": reply.base_value,
        "output_value": reply.output_value,
        "error_estimate": reply.error_estimate,
        "evaluations": reply.evaluations,
    }
    if reply.parameters:
        doc["parameters"] = parameters(reply.parameters)
    return doc


def _values(tensor: pb.ModelInferResponse.InferOutputTensor, raw: bytes | None) -> Any:
    """The tensor's flat values as the infer reply writes them; what JSON cannot hold
    exactly (NaN, infinities, BYTES that are not UTF-8) as null or with replacements."""
    values = _json_values(tensor, raw)
    if values is not None:
        return values
    flat = encoded(tensor, raw).decode().ravel()
    if flat.dtype.kind in "OSU":
        return [bytes(v).decode(errors="replace") for v in flat]
    return [float(v) if np.isfinite(v) else None for v in flat.astype(np.float64)]
