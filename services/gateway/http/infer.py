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
import gzip
import zlib

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
# Fast compression: a reply is compressed on the way out of every request that asks, so
# the cost is per request (zlib's level 1 is several times faster than its default).
_LEVEL = 1


def response_encoding(accept: str | None) -> str | None:
    """gzip or deflate when Accept-Encoding takes one (q > 0), as tritonclient asks."""
    taken: dict[str, float] = {}
    for item in (accept or "").split(",")[:32]:
        name, _, params = item.partition(";")
        q = 1.0
        key, _, value = params.strip().partition("=")
        if key.strip().lower() == "q":
            try:
                q = float(value)
            except ValueError:
                q = 0.0
        taken[name.strip().lower()] = q
    for name in ("gzip", "deflate"):
        if taken.get(name, 0.0) > 0:
            return name
    return None


def compress(body: bytes, encoding: str) -> bytes:
    """`body` in HTTP's gzip or deflate (zlib) framing."""
    if encoding == "gzip":
        return gzip.compress(body, compresslevel=_LEVEL, mtime=0)
    return zlib.compress(body, _LEVEL)


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
            protocol="http",
        )
        answer = await deps.router.infer(call)
        if len(answer.data) < OFF_LOOP_BYTES:
            reply = write_reply(answer.data, parsed.plan)
        else:
            reply = await asyncio.to_thread(write_reply, answer.data, parsed.plan)
        out = {VERSION_HEADER: answer.version}
        if reply.header_length is not None:
            out[HEADER_LENGTH] = str(reply.header_length)
        content = reply.body
        encoding = response_encoding(request.headers.get("accept-encoding"))
        if encoding is not None:
            # The header length stays that of the JSON before compression, as in Triton.
            if len(content) < OFF_LOOP_BYTES:
                content = compress(content, encoding)
            else:
                content = await asyncio.to_thread(compress, content, encoding)
            out["content-encoding"] = encoding
        return Response(content, headers=out, media_type=reply.content_type)

    return [
        Route("/v2/models/{model}/infer", infer, methods=["POST"]),
        Route("/v2/models/{model}/versions/{version}/infer", infer, methods=["POST"]),
    ]
