"""v2 REST health, metadata, statistics and repository routes (Triton's paths and JSON).

Each route builds the v2 protobuf request the gRPC call would carry and goes
through the same Router calls as services.gateway.servicer, so auth, scopes,
allow-lists, limits and version resolution are decided in one place.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from services.common.errors import InvalidArgument, Unimplemented
from services.common.version import server_version
from services.gateway.app import EXTENSIONS, NO_LOAD, NO_UNLOAD, SERVER_NAME
from services.gateway.http import calls
from services.gateway.http.body import read_body
from services.gateway.http.convert import config_json, message_json
from services.gateway.http.deps import HttpDeps
from services.gateway.http.errors import JSON

Endpoint = Callable[[Request], Awaitable[Response]]
# Triton's (and the v2 REST spec's) answer to a health question: 200 true, 400 false,
# empty body.
NOT_TRUE = 400


def json_response(content: Any, status: int = 200) -> Response:
    """A JSON answer, serialized with orjson."""
    return Response(orjson.dumps(content), status, media_type=JSON)


def _health(ok: bool) -> Response:
    return Response(status_code=200 if ok else NOT_TRUE)


def _model(request: Request) -> tuple[str, str]:
    params = request.path_params
    return params.get("model", ""), params.get("version", "")


class MetaRoutes:
    """The routes, bound to the gateway's app layer."""

    def __init__(self, deps: HttpDeps) -> None:
        self.deps = deps
        self.router = deps.router
        self.version = server_version()

    def routes(self) -> list[BaseRoute]:
        """Starlette routes; /v2/models/stats before /v2/models/{model}, as in Triton."""
        model = "/v2/models/{model}"
        versioned = model + "/versions/{version}"
        get: list[tuple[str, Endpoint]] = [
            ("/v2/health/live", self.live),
            ("/v2/health/ready", self.ready),
            ("/v2", self.server_metadata),
            ("/v2/models/stats", self.statistics),
        ]
        for base in (model, versioned):
            get += [
                (base, self.model_metadata),
                (base + "/ready", self.model_ready),
                (base + "/config", self.model_config),
                (base + "/stats", self.statistics),
            ]
        post: list[tuple[str, Endpoint]] = [
            ("/v2/repository/index", self.repository_index),
            ("/v2/repository/models/{model}/load", self.load),
            ("/v2/repository/models/{model}/unload", self.unload),
        ]
        routes: list[BaseRoute] = [Route(p, e, methods=["GET"]) for p, e in get]
        return routes + [Route(p, e, methods=["POST"]) for p, e in post]

    # The gateway's own answers.

    async def live(self, request: Request) -> Response:
        await self.router.charge(calls.authorize(self.deps, request, "ServerLive"), "http")
        return _health(True)

    async def ready(self, request: Request) -> Response:
        await self.router.charge(calls.authorize(self.deps, request, "ServerReady"), "http")
        return _health(self.deps.app.ready())

    async def server_metadata(self, request: Request) -> Response:
        await self.router.charge(calls.authorize(self.deps, request, "ServerMetadata"), "http")
        return json_response(
            {"name": SERVER_NAME, "version": self.version, "extensions": list(EXTENSIONS)}
        )

    async def repository_index(self, request: Request) -> Response:
        key = calls.authorize(self.deps, request, "RepositoryIndex")
        await self.router.charge(key, "http")
        ready = _ready_flag(await read_body(request, self.deps.max_body_bytes))
        rows = await self.router.index(
            key,
            pb.RepositoryIndexRequest(ready=ready).SerializeToString(),
            calls.deadline(request, self.deps.default_timeout),
        )
        return json_response(
            [
                {"name": r.name, "version": r.version, "state": r.state, "reason": r.reason}
                for r in rows
            ]
        )

    async def load(self, request: Request) -> Response:
        calls.authorize(self.deps, request, "RepositoryModelLoad")
        raise Unimplemented(NO_LOAD)

    async def unload(self, request: Request) -> Response:
        calls.authorize(self.deps, request, "RepositoryModelUnload")
        raise Unimplemented(NO_UNLOAD)

    # Forwarded calls.

    async def model_metadata(self, request: Request) -> Response:
        name, version = _model(request)
        serialized = pb.ModelMetadataRequest(name=name, version=version).SerializeToString()
        call = calls.model_call(self.deps, request, "ModelMetadata", serialized)
        data = await self.router.model_call("ModelMetadata", call)
        return json_response(message_json(pb.ModelMetadataResponse.FromString(data)))

    async def model_config(self, request: Request) -> Response:
        name, version = _model(request)
        serialized = pb.ModelConfigRequest(name=name, version=version).SerializeToString()
        call = calls.model_call(self.deps, request, "ModelConfig", serialized)
        data = await self.router.model_call("ModelConfig", call)
        return json_response(config_json(pb.ModelConfigResponse.FromString(data).config))

    async def statistics(self, request: Request) -> Response:
        name, version = _model(request)
        serialized = pb.ModelStatisticsRequest(name=name, version=version).SerializeToString()
        call = calls.model_call(self.deps, request, "ModelStatistics", serialized)
        data = await self.router.model_call("ModelStatistics", call, empty_means_all=True)
        return json_response(message_json(pb.ModelStatisticsResponse.FromString(data)))

    async def model_ready(self, request: Request) -> Response:
        name, version = _model(request)
        serialized = pb.ModelReadyRequest(name=name, version=version).SerializeToString()
        reply = await self.router.model_ready(
            calls.model_call(self.deps, request, "ModelReady", serialized)
        )
        return _health(reply is not None and pb.ModelReadyResponse.FromString(reply).ready)


def _ready_flag(body: bytes) -> bool:
    """The optional {"ready": bool} of a repository index request."""
    if not body.strip():
        return False
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidArgument("request body: expected a JSON object, got malformed JSON") from None
    if not isinstance(parsed, dict):
        raise InvalidArgument(f"request body: expected a JSON object, got {_kind(parsed)}")
    ready = parsed.get("ready", False)
    if not isinstance(ready, bool):
        raise InvalidArgument(f"'ready': expected true or false, got {orjson.dumps(ready)[:64]!r}")
    return ready


def _kind(value: object) -> str:
    """A JSON value's kind, in JSON's words."""
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    return "null" if value is None else "a number"


def meta_routes(deps: HttpDeps) -> list[BaseRoute]:
    """The v2 REST routes other than inference."""
    return MetaRoutes(deps).routes()
