"""GET /v1/models and /v1/models/{model}: the text models the caller's key may use."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from services.common.errors import NotFound
from services.common.names import echo
from services.gateway.http import calls
from services.gateway.http.errors import JSON
from services.gateway.http.openai_calls import Endpoint, OpenAIDeps, deadline
from services.gateway.http.openai_catalog import TextModel

OWNER = "maas"


def _model(deps: OpenAIDeps, model: TextModel) -> dict[str, Any]:
    return {"id": model.name, "object": "model", "created": deps.catalog.created, "owned_by": OWNER}


def models_endpoints(deps: OpenAIDeps) -> tuple[Endpoint, Endpoint]:
    """The list and retrieve endpoints over `deps`."""
    router = deps.http.router

    async def listed(request: Request) -> Response:
        key = calls.authorize(deps.http, request, "ModelInfer")
        await router.charge(key, "http")
        models = await deps.catalog.listed(key, deadline(deps, request))
        body = {"object": "list", "data": [_model(deps, m) for m in models]}
        return Response(orjson.dumps(body), media_type=JSON)

    async def retrieve(request: Request) -> Response:
        key = calls.authorize(deps.http, request, "ModelInfer")
        name = request.path_params["model"]
        await router.admit(key, name, "http")
        found = await deps.catalog.model(
            key, name, deadline(deps, request), calls.passed(deps.http, request)
        )
        if found.kind is None:
            # Not listed, so not there for /v1 (as OpenAI answers an unknown model).
            raise NotFound(f"model {echo(name)} is not a text model: not served on /v1")
        return Response(orjson.dumps(_model(deps, found)), media_type=JSON)

    return listed, retrieve
