"""Bearer secrets kept as sha256 digests and matched in constant time.

Shared by the registry (admin/reader tokens) and the gateway (API keys): neither
keeps a secret in memory in plain text, and neither leaks by timing which entry
(or how much of one) matched.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from services.common.errors import Unauthenticated

T = TypeVar("T")

# No secret maas issues comes near this; the headers' own limit is grpc core's
# (ServiceSettings.max_metadata_bytes), so a longer token is refused here, by name.
MAX_TOKEN_BYTES = 4096


def hash_token(token: str) -> str:
    """The hex sha256 of a secret, as written in a tokens or keys file."""
    return hashlib.sha256(token.encode()).hexdigest()


def token_digest(token: str) -> bytes:
    """The raw sha256 of a secret."""
    return hashlib.sha256(token.encode()).digest()


def match_digest(entries: Iterable[T], token: str, digest_of: Callable[[T], bytes]) -> T | None:
    """The first entry whose digest is the token's, comparing every entry in constant time."""
    digest = token_digest(token)
    found = None
    for entry in entries:
        # No early exit: the time taken does not depend on which entry matched.
        if hmac.compare_digest(digest_of(entry), digest) and found is None:
            found = entry
    return found


def bearer_token(metadata: Sequence[tuple[str, Any]] | None) -> str | None:
    """The token of an `authorization: Bearer <token>` metadata entry, or None.

    The scheme is case-insensitive (RFC 7235), so `bearer` works too. A token over
    MAX_TOKEN_BYTES is Unauthenticated, so that it is never hashed or compared.
    """
    for key, value in metadata or ():
        if key.lower() != "authorization":
            continue
        raw = value if isinstance(value, bytes) else str(value).encode()
        scheme, _, token = raw.strip().partition(b" ")
        token = token.strip()
        if scheme.lower() != b"bearer" or not token:
            continue
        if len(token) > MAX_TOKEN_BYTES:
            raise Unauthenticated(
                f"bearer token too long: expected at most {MAX_TOKEN_BYTES} bytes, got {len(token)}"
            )
        return token.decode(errors="replace")
    return None
