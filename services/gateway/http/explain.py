"""POST /v2/models/{m}[/versions/{v}]/explain: maas.explain.v1.Explainer over REST.

A converter, as GatewayServicer.Explain is: the key is checked before the body is
read, the JSON body becomes one serialized ExplainRequest
(services.gateway.http.explain_json), and the router decides and forwards it as it
does a gRPC Explain (auth, limits and the evaluation budget, version resolution,
canary and the `x-maas-version` pin); the backend's reply becomes the JSON answer.
"""

from __future__ import annotations

import asyncio

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from services.gateway import explain, wire
from services.gateway.app import VERSION_HEADER, pinned_version
from services.gateway.http import calls
from services.gateway.http.body import read_body
from services.gateway.http.deps import HttpDeps
from services.gateway.http.errors import JSON
from services.gateway.http.explain_json import explanation_json, read_explain
from services.gateway.http.infer import OFF_LOOP_BYTES
from services.gateway.routing import Call


def explain_routes(deps: HttpDeps) -> list[BaseRoute]:
    """The explain route, with and without a version in the path."""

    async def explain_call(request: Request) -> Response:
        headers = calls.metadata(request)
        key = deps.router.authorize(headers, explain.METHOD)
        body = await read_body(request, deps.max_body_bytes)
        model = request.path_params["model"]
        version = request.path_params.get("version", "")
        if len(body) < OFF_LOOP_BYTES:
            serialized = read_explain(body, model, version)
        else:
            serialized = await asyncio.to_thread(read_explain, body, model, version)
        call = Call(
            key,
            wire.read_request(serialized),
            serialized,
            calls.deadline(request, deps.default_timeout),
            pinned_version(headers),
            calls.passed(deps, request),
            protocol="http",
        )
        answer = await deps.router.explain(call)
        content = orjson.dumps(explanation_json(answer.data), option=orjson.OPT_SERIALIZE_NUMPY)
        return Response(content, headers={VERSION_HEADER: answer.version}, media_type=JSON)

    return [
        Route("/v2/models/{model}/explain", explain_call, methods=["POST"]),
        Route("/v2/models/{model}/versions/{version}/explain", explain_call, methods=["POST"]),
    ]
