"""What every /v1 route does around its translation: the key, the body, the call, the usage.

The key needs the `inference` scope (the routes run models), is checked before the
body is read, and a model outside its allow-list is refused before anything is
asked about the model. The v2 request goes through Router.infer (or stream_infer)
as a gRPC call does, with the same deadline default, `x-maas-version` pin and
passed-on request id and trace context. Tokens the answers report are counted per
key and model on the gateway's metrics.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from starlette.requests import Request
from starlette.responses import Response

from services.gateway import wire
from services.gateway.app import pinned_version
from services.gateway.auth import ApiKey
from services.gateway.http import calls
from services.gateway.http.body import read_body
from services.gateway.http.deps import HttpDeps
from services.gateway.http.openai_catalog import Catalog
from services.gateway.http.openai_schemas import OpenAIRequest, parse
from services.gateway.routing import Call

T = TypeVar("T", bound=OpenAIRequest)
Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class OpenAIDeps:
    """The HTTP deps and the text-model catalog the /v1 routes share."""

    http: HttpDeps
    catalog: Catalog = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "catalog", Catalog(self.http.router))


async def read_request(
    deps: OpenAIDeps, request: Request, kind: type[T]
) -> tuple[ApiKey | None, T]:
    """The caller's key (scope `inference`) and the checked body; a model the key's
    allow-list leaves out is refused here, before any backend is asked about it."""
    key = calls.authorize(deps.http, request, "ModelInfer")
    body = await read_body(request, deps.http.max_body_bytes)
    parsed = parse(kind, body)
    if key is not None and not key.allows(parsed.model):
        await deps.http.router.admit(key, parsed.model, "http")  # raises PermissionDenied
    return key, parsed


def infer_call(
    deps: OpenAIDeps,
    request: Request,
    key: ApiKey | None,
    serialized: bytes,
    until: float | None = None,
) -> Call:
    """The v2 Call for a translated request, as the v2 infer route builds it (`until`:
    the deadline already read for the request)."""
    return Call(
        key,
        wire.read_request(serialized),
        serialized,
        deadline(deps, request) if until is None else until,
        pinned_version(calls.metadata(request)),
        calls.passed(deps.http, request),
        protocol="http",
    )


def deadline(deps: OpenAIDeps, request: Request) -> float:
    """The request's deadline (the timeout header, else the default)."""
    return calls.deadline(request, deps.http.default_timeout)


def count_tokens(
    deps: OpenAIDeps, key: ApiKey | None, model: str, prompt: int | None, completion: int | None
) -> None:
    """Add an answer's tokens to the key's and model's counters."""
    router = deps.http.router
    label, key_id = router.label(model), key.id if key is not None else ""
    if prompt:
        deps.http.metrics.tokens(key_id, label, "prompt").inc(prompt)
    if completion:
        deps.http.metrics.tokens(key_id, label, "completion").inc(completion)


def usage(prompt: int | None, completion: int | None) -> dict[str, int]:
    """OpenAI's usage object (0 for what the model did not report)."""
    p, c = prompt or 0, completion or 0
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def new_id(prefix: str) -> str:
    """An OpenAI-style object id."""
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    """Unix seconds, OpenAI's `created`."""
    return int(time.time())
