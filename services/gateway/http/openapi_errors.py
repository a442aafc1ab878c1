"""Error answers in the gateway's OpenAPI document, for the v2 and the /v1 routes.

Each family of routes has its own error body and its own reason per status; the
headers some error answers carry (services.gateway.http.errors adds them) are the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.gateway.http.errors import JSON

Schema = dict[str, Any]
# The headers services.gateway.http.errors adds to some error answers.
ERROR_HEADERS = {
    401: {"www-authenticate": "Bearer"},
    429: {"retry-after": "Seconds to wait before trying again."},
}


def error_answers(statuses: tuple[int, ...], why: Mapping[int, str], body: Schema) -> Schema:
    """The `responses` entries of `statuses`: each its reason, `body` and headers."""
    out: Schema = {}
    for status in sorted(set(statuses)):
        answer: Schema = {"description": why[status], "content": {JSON: {"schema": body}}}
        headers = ERROR_HEADERS.get(status)
        if headers:
            answer["headers"] = {
                name: {"description": text, "required": True, "schema": {"type": "string"}}
                for name, text in headers.items()
            }
        out[str(status)] = answer
    return out
