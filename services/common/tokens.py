"""Bearer secrets kept as sha256 digests and matched in constant time.

Shared by the registry (admin/reader tokens) and the gateway (API keys): neither
keeps a secret in memory in plain text, and neither leaks by timing which entry
(or how much of one) matched.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from services.common.errors import Unauthenticated

T = TypeVar("T")

# No secret maas issues comes near this; the headers' own limit is grpc core's
# (ServiceSettings.max_metadata_bytes), so a longer token is refused here, by name.
MAX_TOKEN_BYTES = 4096
_HEX_DIGITS = frozenset("0123456789abcdef")


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


def file_entries(
    data: Any, list_key: str, *, source: str
) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """(index, where, entry) for each entry of a parsed tokens or keys file, a mapping
    whose `list_key` holds a list of mappings; `where` names the entry in errors."""
    entries = data.get(list_key) if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f"{source}: expected a mapping with a '{list_key}' list")
    for i, entry in enumerate(entries):
        where = f"{source}: {list_key}[{i}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected a mapping, got {type(entry).__name__}")
        yield i, where, entry


def entry_digest(entry: dict[str, Any], where: str, secret_key: str) -> bytes:
    """The sha256 an entry of a tokens or keys file names: its 'sha256' (64 hex digits),
    or the digest of its plain secret under `secret_key`."""
    if "sha256" in entry:
        hexdigest = str(entry["sha256"]).lower()
        if len(hexdigest) != 64 or not set(hexdigest) <= _HEX_DIGITS:
            raise ValueError(f"{where}: sha256 must be 64 hex digits")
        return bytes.fromhex(hexdigest)
    if entry.get(secret_key):
        return token_digest(str(entry[secret_key]))
    raise ValueError(f"{where}: expected 'sha256' (hex digest) or '{secret_key}'")
