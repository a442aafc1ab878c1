"""Errors on the OpenAI-compatible routes, in OpenAI's shape.

The status still comes from the one mapping (each ServiceError's http_status);
only the body differs from the v2 routes': {"error": {"message", "type",
"param", "code"}}, as the `openai` package reads it into its exception classes.
Anything unexpected is logged with its traceback and answers 500 with a fixed
message.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.responses import Response

from services.common.errors import InvalidArgument, ServiceError
from services.common.interceptor import INTERNAL_MESSAGE
from services.gateway.http.errors import DEFAULT_RETRY_AFTER, JSON, exception_handlers

_log = logging.getLogger(__name__)

# OpenAI's error types and codes by HTTP status.
_TYPES = {
    400: ("invalid_request_error", None),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "model_not_found"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    499: ("invalid_request_error", "cancelled"),
    501: ("invalid_request_error", "unsupported"),
    503: ("server_error", "unavailable"),
    504: ("timeout_error", "timeout"),
}


class BadField(InvalidArgument):
    """A request field that is wrong or unsupported; `param` names it, as OpenAI does."""

    def __init__(self, param: str | None, message: str) -> None:
        super().__init__(message)
        self.param = param


def error_body(status: int, message: str, param: str | None = None) -> dict[str, Any]:
    """The JSON object of an OpenAI error answer."""
    kind, code = _TYPES.get(status, ("server_error", None))
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _json(status: int, body: dict[str, Any], headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type=JSON)


def describe(exc: BaseException) -> tuple[int, dict[str, Any], dict[str, str]]:
    """The status, OpenAI error body and headers for an exception a route raised."""
    if isinstance(exc, ServiceError):
        headers: dict[str, str] = {}
        if exc.http_status == 401:
            headers["www-authenticate"] = "Bearer"
        elif exc.http_status == 429:
            after = getattr(exc, "retry_after", None) or DEFAULT_RETRY_AFTER
            headers["retry-after"] = str(max(1, math.ceil(after)))
        param = exc.param if isinstance(exc, BadField) else None
        return exc.http_status, error_body(exc.http_status, exc.message, param), headers
    if isinstance(exc, HTTPException):
        return (
            exc.status_code,
            error_body(exc.status_code, str(exc.detail)),
            dict(exc.headers or {}),
        )
    _log.error("unexpected error in an OpenAI-compatible request", exc_info=exc)
    return 500, error_body(500, INTERNAL_MESSAGE), {}


def error_response(exc: BaseException) -> Response:
    """The HTTP answer for an exception a /v1 route raised."""
    status, body, headers = describe(exc)
    return _json(status, body, headers)


# For the /v1 Starlette app: ServiceErrors and Starlette's own 404/405.
EXCEPTION_HANDLERS = exception_handlers(error_response)
