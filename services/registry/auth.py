"""Bearer-token authentication for the registry: admin tokens change, reader tokens read.

Tokens are kept only as sha256 digests and compared in constant time (the helpers
in services.common.tokens, shared with the gateway's API keys). The
interceptor is generic over a policy (method -> required role), so the token
checks stay separate from which registry methods need what.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import grpc
import yaml

from services.common.errors import PermissionDenied, ServiceError, Unauthenticated
from services.common.interceptor import rejecting
from services.common.tokens import (
    bearer_token,
    entry_digest,
    file_entries,
    match_digest,
    token_digest,
)
from services.registry.settings import RegistrySettings

REGISTRY_SERVICE = "maas.registry.v1.ModelRegistry"
READ_METHODS = frozenset(
    {
        "GetModel",
        "ListModels",
        "GetVersion",
        "ListVersions",
        "DownloadVersion",
        "ResolveVersion",
        "GetSnapshot",
        "Watch",
    }
)


class Role(StrEnum):
    """What a token may do; admin includes reader."""

    READER = "reader"
    ADMIN = "admin"

    def allows(self, required: Role) -> bool:
        return self is Role.ADMIN or required is Role.READER


@dataclass(frozen=True)
class Principal:
    """A configured token: its id (safe to log), role and sha256 digest."""

    id: str
    role: Role
    digest: bytes

    def __repr__(self) -> str:
        return f"Principal(id={self.id!r}, role={self.role.value})"


class TokenTable:
    """The configured tokens; looks one up in constant time per entry."""

    def __init__(self, principals: Sequence[Principal]) -> None:
        self._principals = tuple(principals)

    def __len__(self) -> int:
        return len(self._principals)

    def authenticate(self, token: str) -> Principal | None:
        """The principal whose token this is, or None (constant time per entry)."""
        return match_digest(self._principals, token, lambda p: p.digest)

    def authorize(self, metadata: Sequence[tuple[str, Any]], required: Role) -> Principal:
        """The caller's principal if it may act as `required`; else the matching error."""
        token = bearer_token(metadata)
        if token is None:
            raise Unauthenticated(
                "missing credentials: expected 'authorization: Bearer <token>' metadata"
            )
        principal = self.authenticate(token)
        if principal is None:
            raise Unauthenticated("invalid token: it matches no configured token")
        if not principal.role.allows(required):
            raise PermissionDenied(
                f"token '{principal.id}' has role {principal.role.value}: "
                f"expected {required.value} for this call"
            )
        return principal


def parse_tokens(data: Any, *, source: str) -> list[Principal]:
    """Principals from a parsed tokens file: {tokens: [{id, role, sha256 | token}]}."""
    principals = []
    for i, where, entry in file_entries(data, "tokens", source=source):
        ident = str(entry.get("id") or f"token-{i}")
        try:
            role = Role(str(entry.get("role", "")))
        except ValueError:
            raise ValueError(
                f"{where}: role must be 'admin' or 'reader', got {entry.get('role')!r}"
            ) from None
        principals.append(Principal(ident, role, entry_digest(entry, where, "token")))
    return principals


def load_tokens(settings: RegistrySettings) -> TokenTable:
    """Tokens from the tokens file and the admin/reader token settings."""
    principals: list[Principal] = []
    if settings.tokens_file is not None:
        path = Path(settings.tokens_file)
        principals += parse_tokens(yaml.safe_load(path.read_text()), source=str(path))
    for ident, secret, role in (
        ("env-admin", settings.admin_token, Role.ADMIN),
        ("env-reader", settings.reader_token, Role.READER),
    ):
        if secret is not None and secret.get_secret_value():
            digest = token_digest(secret.get_secret_value())
            principals.append(Principal(ident, role, digest))
    return TokenTable(principals)


def registry_policy(method: str) -> Role | None:
    """The role a registry method needs; None (open) for health and reflection."""
    prefix = f"/{REGISTRY_SERVICE}/"
    if not method.startswith(prefix):
        return None
    return Role.READER if method[len(prefix) :] in READ_METHODS else Role.ADMIN


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Checks the bearer token before a call runs; rejections raise ServiceErrors.

    Must come after services.common's ErrorInterceptor, which maps the errors.
    """

    def __init__(self, tokens: TokenTable, policy: Callable[[str], Role | None]) -> None:
        self._tokens = tokens
        self._policy = policy

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        required = self._policy(details.method)
        if handler is None or required is None:
            return handler
        try:
            self._tokens.authorize(details.invocation_metadata or (), required)
        except ServiceError as exc:
            return rejecting(handler, exc)
        return handler
