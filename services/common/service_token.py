"""The service token: inference's own credential, so the gateway cannot be bypassed.

Inference serves whoever reaches its port unless it is given service tokens
(`MAAS_INFERENCE_SERVICE_TOKEN`, or a tokens file of sha256 digests). With tokens,
every call outside grpc.health.v1 and reflection must carry one as
`authorization: Bearer <token>`, or it is UNAUTHENTICATED; health stays open for
kubelet probes and load balancers, and reflection lists only service names. The
gateway sends its `MAAS_GATEWAY_BACKEND_TOKEN` on every backend call.

A caller holding a token may also ask, with `x-maas-detail: full`, for reasons
in full (load failures name the model file by its server path); everyone else gets
them without paths. Without tokens configured, nobody gets full reasons over gRPC:
they are in the log.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import yaml

from services.common.errors import ServiceError, Unauthenticated
from services.common.interceptor import Behavior, rejecting, responses_of, rewrap_handler
from services.common.redact import showing_full_detail
from services.common.tokens import (
    bearer_token,
    entry_digest,
    file_entries,
    match_digest,
    token_digest,
)

DETAIL_HEADER = "x-maas-detail"
# Services any caller may use: health (probes) and reflection (names only).
OPEN_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    }
)


@dataclass(frozen=True)
class ServiceToken:
    """A configured token: its id (safe to log) and sha256 digest."""

    id: str
    digest: bytes

    def __repr__(self) -> str:
        return f"ServiceToken(id={self.id!r})"


def parse_service_tokens(data: Any, *, source: str) -> list[ServiceToken]:
    """Tokens from a parsed tokens file: {tokens: [{id, sha256 | token}]}."""
    return [
        ServiceToken(str(entry.get("id") or f"token-{i}"), entry_digest(entry, where, "token"))
        for i, where, entry in file_entries(data, "tokens", source=source)
    ]


def load_service_tokens(path: str | None, token: str | None) -> tuple[ServiceToken, ...]:
    """The tokens of a tokens file and of a plain token setting (hashed here)."""
    tokens: list[ServiceToken] = []
    if path:
        file = Path(path)
        tokens += parse_service_tokens(yaml.safe_load(file.read_text()), source=str(file))
    if token:
        tokens.append(ServiceToken("env", token_digest(token)))
    return tuple(tokens)


def call_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """The metadata that presents `token` on a call (nothing without one)."""
    return (("authorization", f"Bearer {token}"),) if token else ()


def is_open(method: str) -> bool:
    """Whether a method (`/package.Service/Method`) needs no token."""
    return method.lstrip("/").rpartition("/")[0] in OPEN_SERVICES


def wants_full_detail(metadata: Sequence[tuple[str, Any]]) -> bool:
    """Whether the call asks for full reasons (`x-maas-detail: full`)."""
    return any(k == DETAIL_HEADER and v == "full" for k, v in metadata)


class ServiceTokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls without a configured service token; rejections raise ServiceErrors.

    Must come after services.common's ErrorInterceptor, which maps the errors.
    """

    def __init__(self, tokens: Sequence[ServiceToken]) -> None:
        if not tokens:
            raise ValueError("ServiceTokenInterceptor needs at least one token")
        self._tokens = tuple(tokens)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or is_open(details.method):
            return handler
        metadata = details.invocation_metadata or ()
        try:
            token = bearer_token(metadata)
        except ServiceError as exc:  # a token too long to be one
            return rejecting(handler, exc)
        if token is None:
            return rejecting(
                handler,
                Unauthenticated(
                    "missing credentials: expected 'authorization: Bearer <service token>' "
                    "metadata (inference is called through the gateway)"
                ),
            )
        if match_digest(self._tokens, token, lambda t: t.digest) is None:
            return rejecting(
                handler, Unauthenticated("invalid service token: it matches no configured token")
            )
        if wants_full_detail(metadata):
            return _with_full_detail(handler)
        return handler


def _with_full_detail(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """The handler, run where services.common.redact.full_detail() is True."""

    def unary(behavior: Behavior) -> Behavior:
        async def handle(request: Any, context: Any) -> Any:
            with showing_full_detail():
                return await behavior(request, context)

        return handle

    def stream(behavior: Behavior) -> Behavior:
        async def handle(request: Any, context: Any) -> AsyncIterator[Any]:
            with showing_full_detail():
                async for response in responses_of(behavior, request, context):
                    yield response

        return handle

    return rewrap_handler(handler, unary, stream)
