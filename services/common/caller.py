"""Who a request is for: the API key id the gateway passes to inference.

The gateway authenticates the caller's API key and sends its id (never the key) as
`x-maas-key-id` metadata on the backend call, having dropped any such entry the
client sent; inference counts tokens per key with it. Inference trusts it as far
as it trusts the caller: with service tokens configured only the gateway gets
through (services.common.service_token), without them anyone may set it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

KEY_ID_HEADER = "x-maas-key-id"
# Key ids come from the keys file; anything longer is not one (and would be an
# unbounded metric label), so it reads as no key.
MAX_KEY_ID = 128


def key_id_entry(key_id: str | None) -> tuple[tuple[str, str], ...]:
    """The metadata that passes a key id on (nothing for none)."""
    return ((KEY_ID_HEADER, key_id),) if key_id else ()


def without_key_id(metadata: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """`metadata` without a key id entry, so a caller cannot name a key itself."""
    return tuple((k, v) for k, v in metadata if k != KEY_ID_HEADER)


def key_id_of(metadata: Sequence[tuple[str, Any]] | None) -> str:
    """The key id a call carries ("" when none, or when it cannot be one)."""
    for name, value in metadata or ():
        if name == KEY_ID_HEADER:
            if isinstance(value, str) and 0 < len(value) <= MAX_KEY_ID and value.isprintable():
                return value
            return ""
    return ""
