"""The explain route in the gateway's OpenAPI document (services.gateway.http.explain).

Written as data, as services.gateway.http.openapi is, and checked the same way
(schemathesis against a live gateway).
"""

from __future__ import annotations

from typing import Any

from services.gateway.app import VERSION_HEADER
from services.gateway.http.errors import JSON

Schema = dict[str, Any]
_PARAMS = {"type": "object", "additionalProperties": True}


def _tensor(data: str) -> Schema:
    return {
        "type": "object",
        "required": ["name", "datatype", "shape"],
        "properties": {
            "name": {"type": "string"},
            "datatype": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            "parameters": _PARAMS,
            "data": {"description": data, "type": "array"},
        },
    }


def explain_schemas() -> dict[str, Schema]:
    """The request and response of the explain route."""
    number = {"type": ["number", "null"]}
    return {
        "ExplainRequest": {
            "type": "object",
            "required": ["inputs"],
            "properties": {
                "id": {"type": "string"},
                "inputs": {
                    "description": "One example (batch dimension 1), as an infer body's inputs.",
                    "type": "array",
                    "items": _tensor("Elements, flat or nested in row-major order."),
                },
                "output": {
                    "description": "The output to explain; empty when the model has one.",
                    "type": "string",
                },
                "target": {
                    "description": "The element of the output to explain; unset: the largest.",
                    "type": "integer",
                },
                "method": {
                    "description": "kernel_shap, occlusion or tokens.",
                    "type": "string",
                },
                "background": {
                    "description": "kernel_shap: background rows named like the inputs.",
                    "type": "array",
                    "items": _tensor("Elements, flat or nested in row-major order."),
                },
                "parameters": {
                    "description": "The method's parameters: max_evaluations (capped by the "
                    "server, default 2048), seed; occlusion: patch_size, baseline; tokens: "
                    "reference_text, mode.",
                    **_PARAMS,
                },
            },
        },
        "ExplainResponse": {
            "type": "object",
            "required": [
                "model_name",
                "model_version",
                "attributions",
                "output",
                "target",
                "method",
                "base_value",
                "output_value",
                "error_estimate",
                "evaluations",
            ],
            "properties": {
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "parameters": _PARAMS,
                "attributions": {
                    "description": "One per input, named after it, with its shape (and a "
                    "BYTES '<input>.tokens' tensor for the tokens method).",
                    "type": "array",
                    "items": _tensor("Flat values in row-major order."),
                },
                "output": {"type": "string"},
                "target": {"type": "integer"},
                "method": {"type": "string"},
                "base_value": number,
                "output_value": number,
                "error_estimate": number,
                "evaluations": {"type": "integer", "minimum": 0},
            },
        },
    }


def explain_ops(
    base: str, suffix: str, parameters: list[Schema], errors: dict[str, Any]
) -> dict[str, Any]:
    """POST {base}/explain."""
    return {
        base + "/explain": {
            "post": {
                "summary": "Explain one prediction" + suffix,
                "description": "Attributions for one input, computed next to the model. It "
                "costs one request of the key's rate and its max_evaluations from the key's "
                "explanation budget (429 when over it).",
                "parameters": parameters,
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": {"$ref": "#/components/schemas/ExplainRequest"}}},
                },
                "responses": {
                    "200": {
                        "description": "The attributions and the values they explain.",
                        "headers": {
                            VERSION_HEADER: {
                                "description": "The model version that answered.",
                                "schema": {"type": "string"},
                            }
                        },
                        "content": {
                            JSON: {"schema": {"$ref": "#/components/schemas/ExplainResponse"}}
                        },
                    },
                    **errors,
                },
            }
        }
    }
