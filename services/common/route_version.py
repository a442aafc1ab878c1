"""The version the gateway decided for a large request, passed to inference in metadata.

Why: writing the decided version into a request appends a field to its bytes, which
copies the whole message in Python; for a 63 MB ModelInfer that was one of the three
63 MB buffers the gateway made (received, rewritten, sent), and the costliest part
of its 116 ms stall. From VERSION_HEADER_FROM bytes up, the gateway leaves the body
as it came and sends the version as `x-maas-route-version`; inference serves that
version as if the body had said so. It is no privilege: the body's own version
field says as much, and the gateway passes no such entry from its callers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

ROUTE_VERSION_HEADER = "x-maas-route-version"
# Below this the append costs microseconds and the body says it all.
VERSION_HEADER_FROM = 1 << 20


def route_version_entry(version: str) -> tuple[str, str]:
    """The metadata entry that carries a decided version."""
    return (ROUTE_VERSION_HEADER, version)


def route_version_of(metadata: Sequence[tuple[str, Any]] | None) -> str | None:
    """The decided version a call carries, if it carries one."""
    for name, value in metadata or ():
        if name == ROUTE_VERSION_HEADER and isinstance(value, str):
            return value
    return None
