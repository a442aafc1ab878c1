"""POST /v2/models/{m}[/versions/{v}]/infer: Triton's REST infer, on the gRPC path.

A converter, as GatewayServicer.ModelInfer is: the key is checked before the body
is read, the body becomes one serialized ModelInferRequest
(services.gateway.http.tensor_json), and the router decides and forwards it as it
does a gRPC call (wire.read_request, the `x-maas-version` pin, the passed-on
request id and trace context); the backend's reply becomes the REST reply
(services.gateway.http.tensor_reply).
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from services.gateway import wire
from services.gateway.app import VERSION_HEADER, pinned_version
from services.gateway.http import calls
from services.gateway.http.body import read_body
from services.gateway.http.deps import HttpDeps
from services.gateway.http.tensor_json import HEADER_LENGTH, header_length, read_infer
from services.gateway.http.tensor_reply import write_reply
from services.gateway.routing import Call

# Bodies and replies from this size on are converted off the event loop: JSON data
# costs a step per element, and other requests must not wait for it.
OFF_LOOP_BYTES = 1 << 20


def infer_routes(deps: HttpDeps) -> list[BaseRoute]:
    """The v2 infer route, with and without a version in the path."""

    async def infer(request: Request) -> Response:
        headers = calls.metadata(request)
        key = deps.router.authorize(headers, "ModelInfer")
        body = await read_body(request, deps.max_body_bytes)
        model = request.path_params["model"]
        version = request.path_params.get("version", "")
        size = header_length(request.headers.get(HEADER_LENGTH), len(body))
        if len(body) < OFF_LOOP_BYTES:
            parsed = read_infer(body, size, model, version)
        else:
            parsed = await asyncio.to_thread(read_infer, body, size, model, version)
        # Triton's `timeout` parameter stands in for the default; the header wins over both.
        timeout = deps.default_timeout if parsed.timeout is None else parsed.timeout
        call = Call(
            key,
            wire.read_request(parsed.request),
            parsed.request,
            calls.deadline(request, timeout),
            pinned_version(headers),
            calls.passed(deps, request),
        )
        answer = await deps.router.infer(call)
        if len(answer.data) < OFF_LOOP_BYTES:
            reply = write_reply(answer.data, parsed.plan)
        else:
            reply = await asyncio.to_thread(write_reply, answer.data, parsed.plan)
        out = {VERSION_HEADER: answer.version}
        if reply.header_length is not None:
            out[HEADER_LENGTH] = str(reply.header_length)
        return Response(reply.body, headers=out, media_type=reply.content_type)

    return [
        Route("/v2/models/{model}/infer", infer, methods=["POST"]),
        Route("/v2/models/{model}/versions/{version}/infer", infer, methods=["POST"]),
    ]
