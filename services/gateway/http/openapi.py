"""The gateway's OpenAPI 3.1 document: every HTTP route it serves, as GET /openapi.json.

Built as data here rather than generated from the routes, because Starlette's
routes carry no schemas; tests/integration/gateway/test_gateway_openapi.py runs
schemathesis against a live gateway, so the document and the routes cannot drift
apart unnoticed. The shapes are KServe's v2 REST protocol as Triton answers it.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from services.common.names import MODEL_NAME
from services.common.version import server_version
from services.common.versions import VERSION_NUMBER
from services.gateway.app import VERSION_HEADER
from services.gateway.http.calls import TIMEOUT_HEADER, TIMEOUT_PATTERN
from services.gateway.http.errors import JSON
from services.gateway.http.openai_openapi import openai_paths, openai_schemas
from services.gateway.http.openapi_errors import error_answers
from services.gateway.http.openapi_explain import explain_ops, explain_schemas
from services.gateway.http.openapi_generate import generate_ops, generate_schemas
from services.gateway.http.openapi_schemas import schemas
from services.gateway.http.tensor_json import HEADER_LENGTH

Schema = dict[str, Any]
OPENAPI_PATH = "/openapi.json"
_ERROR_REF = {"$ref": "#/components/schemas/Error"}
# Why each error status comes back (services.common.errors names the mapping).
_ERROR_WHY = {
    400: "The request is wrong (names, types, shapes, contents, headers).",
    401: "No API key, or an unknown one.",
    403: "The key may not call this method or model.",
    404: "No such model or version.",
    409: "Aborted or conflicting.",
    412: "The system is not in a state that allows the call.",
    413: "The body is over the size limit.",
    429: "A rate limit or queue limit was hit; Retry-After says when to try again.",
    499: "The call was cancelled.",
    500: "An unexpected error (a fixed message).",
    501: "Not supported by this gateway.",
    503: "Temporarily unable to serve (no ready backend, draining).",
    504: "The deadline passed before an answer came.",
}
# Every route authorizes and may be rate limited; these are the statuses any call can get.
_COMMON = (400, 401, 403, 429, 500, 503)
_FORWARDED = (*_COMMON, 404, 409, 412, 499, 504)


def _errors(statuses: tuple[int, ...]) -> dict[str, Any]:
    return error_answers(statuses, _ERROR_WHY, _ERROR_REF)


def _json_ok(schema: Schema, description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _param(name: str, description: str, pattern: str) -> Schema:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "pattern": f"^{pattern}$"},
    }


_MODEL = _param("model", "The model's name.", MODEL_NAME.pattern)
_VERSION = _param("version", "The model's version number.", VERSION_NUMBER.pattern)
_HEADERS = [
    {
        "name": TIMEOUT_HEADER,
        "in": "header",
        "required": False,
        "description": "The request timeout in milliseconds (the gRPC deadline's HTTP form).",
        # A positive decimal: zero is refused.
        "schema": {"type": "string", "pattern": TIMEOUT_PATTERN, "not": {"pattern": "^[0.]*$"}},
    },
]


def _health(summary: str, ready_too: bool, errors: tuple[int, ...]) -> dict[str, Any]:
    """A v2 health question: 200 for true, 400 with an empty body for false."""
    responses: dict[str, Any] = {"200": {"description": "True (empty body)."}, **_errors(errors)}
    if ready_too:
        # No content here: one status, two bodies (Triton's empty false, and an error).
        responses["400"] = {
            "description": 'False (empty body), or a bad request (an {"error": ...} body).',
        }
    return {"summary": summary, "responses": responses}


def _model_ops(versioned: bool) -> dict[str, Any]:
    """The GET routes about one model, with or without a version in the path."""
    params = [_MODEL, _VERSION] if versioned else [_MODEL]
    base = "/v2/models/{model}" + ("/versions/{version}" if versioned else "")
    suffix = " (one version)" if versioned else ""
    ops: dict[str, Any] = {
        base: {"summary": "Model metadata" + suffix, "schema": "ModelMetadata"},
        base + "/config": {"summary": "Model configuration" + suffix, "schema": "ModelConfig"},
        base + "/stats": {"summary": "Model statistics" + suffix, "schema": "ModelStatistics"},
    }
    paths: dict[str, Any] = {}
    for path, op in ops.items():
        ref = {"$ref": f"#/components/schemas/{op['schema']}"}
        paths[path] = {
            "get": {
                "summary": op["summary"],
                "parameters": params + _HEADERS,
                "responses": {"200": _json_ok(ref), **_errors(_FORWARDED)},
            }
        }
    ready = _health("Model readiness" + suffix, True, _FORWARDED)
    ready["parameters"] = params + _HEADERS
    paths[base + "/ready"] = {"get": ready}
    infer_params = params + _HEADERS
    paths[base + "/infer"] = {"post": _infer_op("Inference" + suffix, infer_params)}
    paths.update(generate_ops(base, suffix, infer_params, _errors((*_FORWARDED, 413))))
    paths.update(explain_ops(base, suffix, infer_params, _errors((*_FORWARDED, 413, 501))))
    return paths


def _infer_op(summary: str, parameters: list[Schema]) -> dict[str, Any]:
    binary = {
        "type": "string",
        "format": "binary",
        "description": (
            "Triton's binary tensor data extension: the JSON header (its length in the "
            f"{HEADER_LENGTH} header), then the binary tensors in input order."
        ),
    }
    length = {
        "name": HEADER_LENGTH,
        "in": "header",
        "required": False,
        "description": "The JSON header's length in bytes when binary tensors follow it.",
        "schema": {"type": "string"},
    }
    return {
        "summary": summary,
        "parameters": [*parameters, length],
        "requestBody": {
            "required": True,
            "content": {
                JSON: {"schema": {"$ref": "#/components/schemas/InferRequest"}},
                "application/octet-stream": {"schema": binary},
            },
        },
        "responses": {
            "200": {
                "description": "The outputs; binary outputs follow the JSON header.",
                "headers": {
                    VERSION_HEADER: {
                        "description": "The model version that answered.",
                        "schema": {"type": "string"},
                    },
                    HEADER_LENGTH: {
                        "description": "The JSON header's length, when binary outputs follow.",
                        "schema": {"type": "string"},
                    },
                },
                "content": {
                    JSON: {"schema": {"$ref": "#/components/schemas/InferResponse"}},
                    "application/octet-stream": {"schema": binary},
                },
            },
            **_errors((*_FORWARDED, 413)),
        },
    }


def _repository_ops() -> dict[str, Any]:
    change = {
        "parameters": [_MODEL],
        "requestBody": {
            "required": False,
            "content": {JSON: {"schema": {"type": "object", "additionalProperties": True}}},
        },
        "responses": _errors((*_COMMON, 501)),
    }
    return {
        "/v2/repository/index": {
            "post": {
                "summary": "Repository index",
                "parameters": _HEADERS,
                "requestBody": {
                    "required": False,
                    "content": {
                        JSON: {"schema": {"$ref": "#/components/schemas/RepositoryIndexRequest"}}
                    },
                },
                "responses": {
                    "200": _json_ok({"$ref": "#/components/schemas/RepositoryIndex"}),
                    **_errors((*_COMMON, 413, 504)),
                },
            }
        },
        "/v2/repository/models/{model}/load": {
            "post": {"summary": "Load a model (not supported: 501)", **change}
        },
        "/v2/repository/models/{model}/unload": {
            "post": {"summary": "Unload a model (not supported: 501)", **change}
        },
    }


def build_document(openai_prefix: str = "/v1") -> Schema:
    """The whole document, built once per app (services.gateway.http.app)."""
    paths: dict[str, Any] = {
        "/v2/health/live": {"get": _health("Server liveness", False, _COMMON)},
        "/v2/health/ready": {"get": _health("Server readiness", True, _COMMON)},
        "/v2": {
            "get": {
                "summary": "Server metadata",
                "responses": {
                    "200": _json_ok({"$ref": "#/components/schemas/ServerMetadata"}),
                    **_errors(_COMMON),
                },
            }
        },
        "/v2/models/stats": {
            "get": {
                "summary": "Statistics of every model",
                "parameters": _HEADERS,
                "responses": {
                    "200": _json_ok({"$ref": "#/components/schemas/ModelStatistics"}),
                    **_errors(_FORWARDED),
                },
            }
        },
        **_model_ops(versioned=False),
        **_model_ops(versioned=True),
        **_repository_ops(),
        **openai_paths(openai_prefix),
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "maas gateway",
            "version": server_version(),
            "description": "KServe v2 REST inference protocol (Triton's JSON and binary data).",
        },
        "paths": paths,
        "components": {
            "schemas": schemas() | openai_schemas() | generate_schemas() | explain_schemas(),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key, as 'authorization: Bearer <key>'.",
                }
            },
        },
        "security": [{"bearer": []}],
    }


def openapi_routes(openai_prefix: str = "/v1") -> list[BaseRoute]:
    """GET /openapi.json, serving the document serialized once."""
    body = orjson.dumps(build_document(openai_prefix))

    async def document(request: Request) -> Response:
        return Response(body, media_type=JSON)

    return [Route(OPENAPI_PATH, document, methods=["GET"])]
