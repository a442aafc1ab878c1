"""What every HTTP route reads from a request the way the gRPC servicer reads its call:
the headers as metadata, the caller's key, the deadline and the entries passed on."""

from __future__ import annotations

import asyncio
import math
import re

from starlette.requests import Request

from services.common.errors import InvalidArgument
from services.gateway import wire
from services.gateway.auth import ApiKey
from services.gateway.forward import forwarded
from services.gateway.http.deps import HttpDeps
from services.gateway.routing import Call, Passed

# The request timeout in milliseconds, the HTTP side of a gRPC deadline.
TIMEOUT_HEADER = "x-maas-timeout-ms"
# Its form: a plain decimal (no sign, exponent or spaces), as the OpenAPI document says.
TIMEOUT_PATTERN = r"^[0-9]{1,12}(\.[0-9]{1,9})?$"
_TIMEOUT = re.compile(TIMEOUT_PATTERN)
Metadata = list[tuple[str, str]]


def metadata(request: Request) -> Metadata:
    """The headers as gRPC-style metadata: lower-case names, as the app layer reads them."""
    return request.headers.items()


def deadline(request: Request, default_timeout: float) -> float:
    """The event-loop time the request must be answered by."""
    seconds = default_timeout
    raw = request.headers.get(TIMEOUT_HEADER)
    if raw is not None:
        millis = float(raw) if _TIMEOUT.fullmatch(raw) else math.nan
        if not math.isfinite(millis) or millis <= 0:
            raise InvalidArgument(
                f"{TIMEOUT_HEADER} header: expected a positive number of milliseconds, "
                f"got {raw[:64]!r}"
            )
        seconds = millis / 1000
    return asyncio.get_running_loop().time() + seconds


def authorize(deps: HttpDeps, request: Request, method: str) -> ApiKey | None:
    """The caller's key for a v2 method (its gRPC name), as the servicer authorizes it."""
    return deps.router.authorize(metadata(request), method)


def passed(deps: HttpDeps, request: Request) -> Passed:
    """The header entries a backend gets too (request id, trace context)."""
    return forwarded(metadata(request), deps.passed_keys)


def model_call(deps: HttpDeps, request: Request, method: str, serialized: bytes) -> Call:
    """A Call for a serialized v2 request about a model, authorized for `method`."""
    key = authorize(deps, request, method)
    return Call(
        key,
        wire.read_request(serialized),
        serialized,
        deadline(request, deps.default_timeout),
        passed=passed(deps, request),
        protocol="http",
    )
