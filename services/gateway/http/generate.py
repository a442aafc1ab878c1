"""POST /v2/models/{m}[/versions/{v}]/generate and .../generate_stream: Triton's
generate extension, for the generative models (Triton's vLLM backend I/O).

As in Triton, the body's top-level keys other than `id` and `parameters` are the
model's inputs by name (`text_input`, `messages`, `sampling_parameters` as an
object or a JSON string, the BOOL flags), and `parameters` holds the options
Triton's vLLM users send there: a key naming one of the model's BOOL inputs
(`stream`, `exclude_input_in_output`, ...) sets that input, and every other key is
a sampling option, merged into `sampling_parameters` (the model refuses, naming
it, a key it does not know). The request becomes one v2 ModelInferRequest on the
same path as /infer (auth before the body, allow-lists, rate limits, routing,
canary, the `x-maas-version` pin, the deadline); the answer is
`{"model_name", "model_version", "text_output", ...}`, one JSON value per output.
generate_stream answers SSE, one `data: {json}` per backend response (the new
text), an error after the start as `data: {"error": "..."}`; the first response is
awaited first, so a refusal keeps its HTTP status, and a client that goes away
closes the backend stream (services.gateway.http.streams), cancelling the
generation.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Collection
from typing import Any

import numpy as np
import orjson
from google.protobuf.message import DecodeError
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from services.common.errors import Internal, InvalidArgument, ServiceError
from services.common.names import echo
from services.common.tensors import encode
from services.gateway import wire
from services.gateway.app import VERSION_HEADER, pinned_version
from services.gateway.auth import ApiKey
from services.gateway.http import calls
from services.gateway.http.body import read_body
from services.gateway.http.deps import HttpDeps
from services.gateway.http.errors import JSON, error_response
from services.gateway.http.openai_calls import OpenAIDeps
from services.gateway.http.openai_sse import HEADERS, event
from services.gateway.http.openai_v2 import (
    EXCLUDE_INPUT,
    FLAGS,
    MESSAGES,
    SAMPLING,
    STREAM,
    outputs,
)
from services.gateway.http.streams import backend_stream
from services.gateway.routing import Call

BOOL_INPUTS = frozenset((STREAM, EXCLUDE_INPUT, *FLAGS))
# Keys of the body that are not inputs.
ID, PARAMETERS = "id", "parameters"
# At most this many inputs and sampling options: a request is small.
MAX_KEYS = 64
_DTYPES = {bool: ("BOOL", np.bool_), int: ("INT64", np.int64), float: ("FP64", np.float64)}


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _array(name: str, value: object) -> np.ndarray:
    """A JSON input value (a scalar or a flat list of one type) as a 1-D array."""
    items = value if isinstance(value, list) else [value]
    types = {type(v) for v in items}
    if not items or len(types) != 1 or not types <= {str, bool, int, float}:
        raise InvalidArgument(
            f"input {echo(name)}: expected a string, boolean or number, or a non-empty "
            f"list of one of those, got {_kind(value)}"
        )
    kind = types.pop()
    if kind is str:
        array = np.empty(len(items), dtype=object)
        array[:] = [str(v).encode() for v in items]
        return array
    return np.array(items, dtype=_DTYPES[kind][1])


def _sampling(value: object) -> dict[str, Any]:
    """`sampling_parameters` given as an object or as a JSON string of one."""
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise InvalidArgument(
                f"input 'sampling_parameters': expected a JSON object, got {echo(str(value))}"
            ) from None
    if not isinstance(value, dict):
        raise InvalidArgument(
            f"input 'sampling_parameters': expected a JSON object, got {_kind(value)}"
        )
    return value


def _document(body: bytes) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """The body's `id`, its inputs and its `parameters`."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgument(f"malformed JSON in the request: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidArgument(f"the request is {_kind(doc)}, expected a JSON object")
    request_id = doc.pop(ID, "")
    if not isinstance(request_id, str):
        raise InvalidArgument(f"'id' is {_kind(request_id)}, expected a string")
    params = doc.pop(PARAMETERS, {})
    if not isinstance(params, dict):
        raise InvalidArgument(f"'parameters' is {_kind(params)}, expected a JSON object")
    if len(doc) + len(params) > MAX_KEYS:
        raise InvalidArgument(
            f"the request has {len(doc)} inputs and {len(params)} parameters, "
            f"expected at most {MAX_KEYS} in all"
        )
    return request_id, doc, params


def _merged(
    doc: dict[str, Any], params: dict[str, Any], declared: Collection[str], stream: bool
) -> dict[str, Any]:
    """The inputs by name: the top-level ones, the BOOL inputs `parameters` sets, and
    `sampling_parameters` with the other `parameters` keys in it."""
    inputs = dict(doc)
    given = SAMPLING in inputs
    sampling = _sampling(inputs.pop(SAMPLING)) if given else {}
    for key, value in params.items():
        where = inputs if key in BOOL_INPUTS and key in declared else sampling
        if key in where:
            also = "an input" if where is inputs else "a sampling_parameters key"
            raise InvalidArgument(f"parameters.{key}: given twice (also as {also})")
        where[key] = value
    if stream and STREAM in declared:
        inputs.setdefault(STREAM, True)
    unknown = sorted(set(inputs) - set(declared))
    if unknown:
        raise InvalidArgument(
            f"input {echo(unknown[0])}: the model has no such input, expected one of "
            f"{sorted({*declared, ID, PARAMETERS})}"
        )
    if sampling or given:
        if SAMPLING not in declared:
            raise InvalidArgument(
                f"parameters {sorted(sampling)}: the model takes no sampling_parameters"
            )
        inputs[SAMPLING] = orjson.dumps(sampling).decode()
    if isinstance(inputs.get(MESSAGES), list):
        # Chat messages may be given as JSON rather than as a string of it.
        inputs[MESSAGES] = orjson.dumps(inputs[MESSAGES]).decode()
    return inputs


def read_generate(
    body: bytes, model: str, version: str, declared: Collection[str], stream: bool
) -> bytes:
    """The serialized ModelInferRequest a generate body asks for; InvalidArgument
    naming the field, expected against got. `declared`: the model's input names;
    `stream`: the route's default for the `stream` input."""
    request_id, doc, params = _document(body)
    request = pb.ModelInferRequest(model_name=model, model_version=version, id=request_id)
    for name, value in _merged(doc, params, declared, stream).items():
        if name in BOOL_INPUTS and not isinstance(value, bool):
            raise InvalidArgument(f"input {echo(name)}: expected true or false, got {_kind(value)}")
        tensor = request.inputs.add(name=name)
        request.raw_input_contents.append(encode(_array(name, value), tensor, raw=True) or b"")
    return request.SerializeToString()


def _value(array: np.ndarray) -> Any:
    items = [v.decode(errors="replace") if isinstance(v, bytes) else v for v in array.tolist()]
    return items[0] if len(items) == 1 else items


def reply_json(response: pb.ModelInferResponse, model: str) -> dict[str, Any]:
    """Triton's generate answer: the model, its version and one JSON value per output
    (a scalar for one element, else a flat list)."""
    out: dict[str, Any] = {"model_name": model, "model_version": response.model_version}
    if response.id:
        out[ID] = response.id
    for name, array in outputs(response).items():
        out[name] = _value(array.reshape(-1))
    return out


class GenerateRoutes:
    """The two routes over one catalog of text models and the router."""

    def __init__(self, deps: HttpDeps) -> None:
        self.deps = deps
        self.shared = OpenAIDeps(deps)

    async def _call(self, request: Request, stream: bool) -> tuple[Call, str]:
        deps = self.deps
        headers = calls.metadata(request)
        key: ApiKey | None = deps.router.authorize(headers, "ModelInfer")
        body = await read_body(request, deps.max_body_bytes)
        model = request.path_params["model"]
        version = request.path_params.get("version", "")
        if key is not None and not key.allows(model):
            await deps.router.admit(key, model, "http")  # raises PermissionDenied
        until, passed = calls.deadline(request, deps.default_timeout), calls.passed(deps, request)
        found = await self.shared.catalog.require(key, model, "generate", until, passed)
        serialized = read_generate(body, model, version, found.inputs, stream)
        call = Call(
            key,
            wire.read_request(serialized),
            serialized,
            until,
            pinned_version(headers),
            passed,
            protocol="http",
        )
        return call, model

    async def generate(self, request: Request) -> Response:
        call, model = await self._call(request, stream=False)
        answer = await self.deps.router.infer(call)
        try:
            response = pb.ModelInferResponse.FromString(answer.data)
        except DecodeError:
            raise Internal("internal error") from None
        return Response(
            orjson.dumps(reply_json(response, model)),
            headers={VERSION_HEADER: answer.version},
            media_type=JSON,
        )

    async def generate_stream(self, request: Request) -> Response:
        call, model = await self._call(request, stream=True)
        responses = backend_stream(self.deps.router, call)
        try:
            first = await anext(responses)
        except StopAsyncIteration:
            first = None
        except ServiceError:
            await responses.aclose()
            raise
        events = _events(first, responses, model)
        return StreamingResponse(events, media_type="text/event-stream", headers=HEADERS)


async def _events(
    first: pb.ModelInferResponse | None,
    responses: AsyncGenerator[pb.ModelInferResponse, None],
    model: str,
) -> AsyncIterator[bytes]:
    """The SSE events; leaving this (the end, or the client away) closes the stream."""
    async with contextlib.aclosing(responses):
        try:
            if first is not None:
                yield event(reply_json(first, model))
            async for response in responses:
                yield event(reply_json(response, model))
        except Exception as exc:  # noqa: BLE001 - the status is sent: the error goes as an event
            # The v2 routes' {"error": ...} body (logged there when unexpected).
            yield b"data: " + bytes(error_response(exc).body) + b"\n\n"


def generate_routes(deps: HttpDeps) -> list[BaseRoute]:
    """The generate routes, with and without a version in the path."""
    routes = GenerateRoutes(deps)
    out: list[BaseRoute] = []
    for base in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
        out.append(Route(base + "/generate", routes.generate, methods=["POST"]))
        out.append(Route(base + "/generate_stream", routes.generate_stream, methods=["POST"]))
    return out
