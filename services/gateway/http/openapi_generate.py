"""Triton's generate extension in the gateway's OpenAPI document (services.gateway.http.generate).

Written as data, as services.gateway.http.openapi is, and checked the same way
(schemathesis against a live gateway). The inputs a body may name are the model's
(its metadata), so the request schema lists the generative models' I/O and leaves
room for others.
"""

from __future__ import annotations

from typing import Any

from services.gateway.app import VERSION_HEADER
from services.gateway.http.errors import JSON

Schema = dict[str, Any]
_FLAG = {"type": "boolean"}


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def generate_schemas() -> dict[str, Schema]:
    """The request and response of the generate routes."""
    return {
        "GenerateRequest": {
            "type": "object",
            "description": (
                "The model's inputs by name; `parameters` sets the BOOL inputs it names "
                "and every other key is a sampling option (merged into "
                "sampling_parameters), as Triton's vLLM backend users send them."
            ),
            "properties": {
                "id": {"type": "string"},
                "text_input": {"type": "string"},
                "messages": {
                    "description": "Chat messages, a list or a JSON string of one.",
                    "oneOf": [
                        {"type": "string"},
                        {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "role": {"type": "string"},
                                    "content": {"type": "string"},
                                },
                                "required": ["role", "content"],
                            },
                        },
                    ],
                },
                "sampling_parameters": {
                    "description": "An object, or a JSON string of one.",
                    "oneOf": [{"type": "object"}, {"type": "string"}],
                },
                "stream": _FLAG,
                "exclude_input_in_output": _FLAG,
                "return_num_input_tokens": _FLAG,
                "return_num_output_tokens": _FLAG,
                "return_finish_reason": _FLAG,
                "parameters": {"type": "object", "additionalProperties": True},
            },
            "additionalProperties": True,
        },
        "GenerateResponse": {
            "type": "object",
            "description": "One JSON value per output: a scalar for one element, else a list.",
            "properties": {
                "id": {"type": "string"},
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "text_output": {"type": "string"},
                "num_input_tokens": {"type": "integer"},
                "num_output_tokens": {"type": "integer"},
                "finish_reason": {"type": "string"},
            },
            "required": ["model_name", "model_version"],
            "additionalProperties": True,
        },
    }


def generate_ops(
    base: str, summary: str, parameters: list[Schema], errors: dict[str, Any]
) -> dict[str, Any]:
    """The generate and generate_stream paths under `base` (a model path)."""
    body = {"required": True, "content": {JSON: {"schema": _ref("GenerateRequest")}}}
    unary = {
        "description": "The outputs.",
        "headers": {
            VERSION_HEADER: {
                "description": "The model version that answered.",
                "schema": {"type": "string"},
            }
        },
        "content": {JSON: {"schema": _ref("GenerateResponse")}},
    }
    stream = {
        "description": (
            "Server-Sent Events: one `data: {GenerateResponse}` per response (the new "
            'text), an error after the start as `data: {"error": "..."}`.'
        ),
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
    return {
        base + "/generate": {
            "post": {
                "summary": "Generate" + summary,
                "parameters": parameters,
                "requestBody": body,
                "responses": {"200": unary, **errors},
            }
        },
        base + "/generate_stream": {
            "post": {
                "summary": "Generate, streamed" + summary,
                "parameters": parameters,
                "requestBody": body,
                "responses": {"200": stream, **errors},
            }
        },
    }
