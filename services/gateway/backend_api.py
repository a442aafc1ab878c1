"""What the request path needs of the inference backends, as a protocol: the gRPC
forwarder (services.gateway.forward) is one, the unit tests' fakes are others."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

# Metadata passed on to a backend.
Passed = tuple[tuple[str, str], ...]


class Backends(Protocol):
    """The inference backends: what they have ready, and sending them one call."""

    async def unary(
        self,
        method: str,
        request: bytes,
        deadline: float,
        metadata: Passed = (),
        model: str = "",
        version: int | None = None,
        wait: float | None = None,
    ) -> bytes:
        """A backend's serialized reply to a serialized request about `model` (`version`,
        or any); only backends that have it ready are asked, waiting up to `wait` (None:
        the configured ready wait) for one when none has."""
        ...

    def stream(
        self,
        request: bytes,
        deadline: float,
        metadata: Passed = (),
        model: str = "",
        version: int | None = None,
        wait: float | None = None,
    ) -> AsyncIterator[bytes]:
        """Every response (serialized ModelStreamInferResponse) one backend makes to one
        inference request sent over a stream of its own; an error_message response
        raises its ServiceError."""
        ...

    def ready_versions(self, model: str) -> frozenset[int] | None:
        """The versions of `model` some backend has READY (None: a backend does not say)."""
        ...

    def knows(self, model: str, version: int | None = None) -> bool | None:
        """Whether some backend has `model` (that version, or any) in any state (None: a
        backend does not say)."""
        ...

    def want_catalogs(self) -> None:
        """What the backends have may have changed: learn it again soon."""
        ...

    async def refresh_catalogs(self, deadline: float) -> None:
        """Learn what the backends have now (by `deadline`, event-loop time)."""
        ...
