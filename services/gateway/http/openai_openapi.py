"""The /v1 routes in the gateway's OpenAPI document: paths and component schemas.

Written as data, as services.gateway.http.openapi is, and checked the same way
(schemathesis against a live gateway). Request schemas say what the routes take
(services.gateway.http.openai_schemas): fields refused unless harmless (`n`,
penalties) are documented with the one value taken.
"""

from __future__ import annotations

from typing import Any

from services.common.names import MODEL_NAME
from services.gateway.http.errors import JSON
from services.gateway.http.openai_schemas import MAX_INT, MAX_SEED, MAX_STOP
from services.gateway.http.openapi_errors import error_answers

Schema = dict[str, Any]
_ERROR = {"$ref": "#/components/schemas/OpenAIError"}
_WHY = {
    400: "A field is wrong or not supported (`param` names it), or the model is not of "
    "this route's kind.",
    401: "No API key, or an unknown one.",
    403: "The key may not run models, or not this one.",
    404: "No such model.",
    413: "The body is over the size limit.",
    429: "A rate limit or queue limit was hit; Retry-After says when to try again.",
    499: "The call was cancelled.",
    500: "An unexpected error (a fixed message).",
    501: "Not supported by this gateway.",
    503: "Temporarily unable to serve (no ready backend, draining).",
    504: "The deadline passed before an answer came.",
}
_LISTING = (400, 401, 403, 429, 500, 503, 504)
_CALLS = (*_LISTING, 404, 413, 499, 501)


def _errors(statuses: tuple[int, ...]) -> dict[str, Any]:
    return error_answers(statuses, _WHY, _ERROR)


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _post(summary: str, request: str, reply: str, stream: bool) -> dict[str, Any]:
    content: dict[str, Any] = {JSON: {"schema": _ref(reply)}}
    if stream:
        content["text/event-stream"] = {
            "schema": {
                "type": "string",
                "description": "With `stream: true`: `data: {chunk}` events, then `data: [DONE]`.",
            }
        }
    return {
        "post": {
            "summary": summary,
            "requestBody": {"required": True, "content": {JSON: {"schema": _ref(request)}}},
            "responses": {"200": {"description": "OK", "content": content}, **_errors(_CALLS)},
        }
    }


def openai_paths(prefix: str = "/v1") -> dict[str, Any]:
    """The /v1 operations."""
    model = {
        "name": "model",
        "in": "path",
        "required": True,
        "description": "The model's name.",
        "schema": {"type": "string", "pattern": f"^{MODEL_NAME.pattern}$"},
    }
    ok = {"description": "OK", "content": {JSON: {"schema": _ref("OpenAIModelList")}}}
    one = {"description": "OK", "content": {JSON: {"schema": _ref("OpenAIModel")}}}
    return {
        prefix + "/models": {
            "get": {
                "summary": "The text models the key may use (OpenAI)",
                "responses": {"200": ok, **_errors(_LISTING)},
            }
        },
        prefix + "/models/{model}": {
            "get": {
                "summary": "One text model (OpenAI)",
                "parameters": [model],
                "responses": {"200": one, **_errors(_CALLS)},
            }
        },
        prefix + "/embeddings": _post(
            "Embeddings (OpenAI)", "OpenAIEmbeddingRequest", "OpenAIEmbeddingList", False
        ),
        prefix + "/completions": _post(
            "Completions (OpenAI)", "OpenAICompletionRequest", "OpenAICompletion", True
        ),
        prefix + "/chat/completions": _post(
            "Chat completions (OpenAI)", "OpenAIChatRequest", "OpenAIChatCompletion", True
        ),
    }


def _object(properties: Schema, required: list[str]) -> Schema:
    return {"type": "object", "required": required, "properties": properties}


def openai_schemas() -> dict[str, Schema]:
    """The /v1 component schemas."""
    name = {"type": "string", "pattern": f"^{MODEL_NAME.pattern}$"}
    strings = {"type": "array", "items": {"type": "string"}}
    sampling: Schema = {
        "model": name,
        "max_tokens": {"type": ["integer", "null"], "minimum": 1, "maximum": MAX_INT},
        "temperature": {"type": ["number", "null"], "minimum": 0, "maximum": 2},
        "top_p": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 1},
        "top_k": {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_INT},
        "seed": {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_SEED},
        "stop": {
            "oneOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}, "maxItems": MAX_STOP},
                {"type": "null"},
            ]
        },
        "stream": {"type": "boolean"},
        "stream_options": {
            "type": ["object", "null"],
            "properties": {"include_usage": {"type": "boolean"}},
        },
        "n": {"const": 1, "description": "One choice per request."},
        "user": {"type": ["string", "null"]},
    }
    usage = _object(
        {
            "prompt_tokens": {"type": "integer"},
            "completion_tokens": {"type": "integer"},
            "total_tokens": {"type": "integer"},
        },
        ["prompt_tokens", "completion_tokens", "total_tokens"],
    )
    finish = {"type": ["string", "null"], "enum": ["stop", "length", None]}
    model = _object(
        {
            "id": {"type": "string"},
            "object": {"const": "model"},
            "created": {"type": "integer"},
            "owned_by": {"type": "string"},
        },
        ["id", "object", "created", "owned_by"],
    )
    part = _object({"type": {"const": "text"}, "text": {"type": "string"}}, ["type", "text"])
    message = _object(
        {
            "role": {"enum": ["system", "developer", "user", "assistant"]},
            "content": {"oneOf": [{"type": "string"}, {"type": "array", "items": part}]},
        },
        ["role", "content"],
    )
    completion_choice = _object(
        {"index": {"type": "integer"}, "text": {"type": "string"}, "finish_reason": finish},
        ["index", "text", "finish_reason"],
    )
    chat_choice = _object(
        {
            "index": {"type": "integer"},
            "message": _object(
                {"role": {"const": "assistant"}, "content": {"type": "string"}},
                ["role", "content"],
            ),
            "finish_reason": finish,
        },
        ["index", "message", "finish_reason"],
    )

    def answer(kind: str, choice: Schema) -> Schema:
        return _object(
            {
                "id": {"type": "string"},
                "object": {"const": kind},
                "created": {"type": "integer"},
                "model": {"type": "string"},
                "choices": {"type": "array", "items": choice},
                "usage": usage,
            },
            ["id", "object", "created", "model", "choices", "usage"],
        )

    return {
        "OpenAIError": _object(
            {
                "error": _object(
                    {
                        "message": {"type": "string"},
                        "type": {"type": "string"},
                        "param": {"type": ["string", "null"]},
                        "code": {"type": ["string", "null"]},
                    },
                    ["message", "type", "param", "code"],
                )
            },
            ["error"],
        ),
        "OpenAIModel": model,
        "OpenAIModelList": _object(
            {"object": {"const": "list"}, "data": {"type": "array", "items": model}},
            ["object", "data"],
        ),
        "OpenAIEmbeddingRequest": _object(
            {
                "model": name,
                "input": {"oneOf": [{"type": "string"}, {**strings, "minItems": 1}]},
                "encoding_format": {"enum": ["float", "base64"]},
                "dimensions": {"type": ["integer", "null"], "minimum": 1, "maximum": MAX_INT},
                "user": {"type": ["string", "null"]},
            },
            ["model", "input"],
        ),
        "OpenAIEmbeddingList": _object(
            {
                "object": {"const": "list"},
                "model": {"type": "string"},
                "data": {
                    "type": "array",
                    "items": _object(
                        {
                            "object": {"const": "embedding"},
                            "index": {"type": "integer"},
                            "embedding": {
                                "oneOf": [
                                    {"type": "array", "items": {"type": "number"}},
                                    {"type": "string", "description": "base64 float32"},
                                ]
                            },
                        },
                        ["object", "index", "embedding"],
                    ),
                },
                "usage": _object(
                    {"prompt_tokens": {"type": "integer"}, "total_tokens": {"type": "integer"}},
                    ["prompt_tokens", "total_tokens"],
                ),
            },
            ["object", "model", "data", "usage"],
        ),
        "OpenAICompletionRequest": _object(
            {**sampling, "prompt": {"type": "string"}}, ["model", "prompt"]
        ),
        "OpenAIChatRequest": _object(
            {
                **sampling,
                "messages": {"type": "array", "items": message, "minItems": 1},
                "max_completion_tokens": {
                    "type": ["integer", "null"],
                    "minimum": 1,
                    "maximum": MAX_INT,
                },
            },
            ["model", "messages"],
        ),
        "OpenAICompletion": answer("text_completion", completion_choice),
        "OpenAIChatCompletion": answer("chat.completion", chat_choice),
    }
