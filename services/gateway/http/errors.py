"""Errors as HTTP answers: the status each ServiceError names, with KServe's {"error": ...} body.

The status comes from the error class itself (services.common.errors), the one
mapping both front ends read. Anything unexpected is logged with its traceback
and answers 500 with a fixed message, so internals never leak.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.errors import ResourceExhausted, ServiceError
from services.common.interceptor import INTERNAL_MESSAGE

_log = logging.getLogger(__name__)
JSON = "application/json"
# Seconds a rate-limited caller is told to wait when the error does not say.
DEFAULT_RETRY_AFTER = 1


class BodyTooLarge(ResourceExhausted):
    """A request body over the limit (the gRPC message limit); 413 rather than 429."""

    http_status = 413


def json_error(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    """A JSON error answer in KServe's shape."""
    return Response(orjson.dumps({"error": message}), status, headers, media_type=JSON)


def error_response(exc: BaseException) -> Response:
    """The HTTP answer for an exception a route raised."""
    if isinstance(exc, ServiceError):
        headers: dict[str, str] = {}
        if exc.http_status == 401:
            headers["www-authenticate"] = "Bearer"
        elif exc.http_status == 429:
            after = getattr(exc, "retry_after", None) or DEFAULT_RETRY_AFTER
            headers["retry-after"] = str(max(1, math.ceil(after)))
        return json_error(exc.http_status, exc.message, headers)
    if isinstance(exc, HTTPException):
        return json_error(exc.status_code, str(exc.detail), exc.headers)
    _log.error("unexpected error in an HTTP request", exc_info=exc)
    return json_error(500, INTERNAL_MESSAGE)


Respond = Callable[[BaseException], Response]


def exception_handlers(respond: Respond) -> dict[Any, Any]:
    """For Starlette(exception_handlers=...): ServiceErrors and Starlette's own 404/405,
    answered by `respond` (this module's error_response, or the /v1 routes' own)."""

    async def handle(request: Request, exc: Exception) -> Response:
        return respond(exc)

    return {ServiceError: handle, HTTPException: handle}


EXCEPTION_HANDLERS = exception_handlers(error_response)


class ErrorMiddleware:
    """Turns an unexpected exception into `respond`'s fixed 500 answer (logged once, by
    `respond`), instead of Starlette's plain-text page and uvicorn's second traceback.
    After a response has started there is nothing left to answer: the error is logged
    and the connection ends with the response unfinished."""

    def __init__(self, app: ASGIApp, respond: Respond = error_response) -> None:
        self.app = app
        self.respond = respond

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:  # noqa: BLE001 - the one place unexpected errors become 500
            if started:
                _log.error("unexpected error after an HTTP response started", exc_info=exc)
                raise
            await self.respond(exc)(scope, receive, send)
