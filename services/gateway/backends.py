"""A backend as the pool holds it (its channel and state), and how backends are called."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import grpc

from services.gateway.balancer import DEFAULT_PICKER, BackendState


@dataclass(frozen=True)
class PoolOptions:
    """How backends are called, ejected and probed."""

    max_message_bytes: int
    balancer: str = DEFAULT_PICKER
    eject_base_seconds: float = 1.0
    eject_max_seconds: float = 30.0
    probe_timeout_seconds: float = 1.0
    probe_interval_seconds: float = 0.2
    # The least time between two reads of one backend's RepositoryIndex.
    catalog_interval_seconds: float = 0.25
    # How long a call may wait, within its deadline, for some backend to have its model
    # ready when none has (a replica restarting, a version loading) before UNAVAILABLE.
    ready_wait_seconds: float = 2.0
    # Client interceptors for backend channels (trace context), if any.
    interceptors: tuple[grpc.aio.ClientInterceptor, ...] = ()


@dataclass
class Backend:
    """A backend's channel and state; its callables are made once per method."""

    state: BackendState
    channel: grpc.aio.Channel
    _methods: dict[str, grpc.aio.UnaryUnaryMultiCallable] = field(default_factory=dict)
    # One health Watch per model the backend knows.
    watches: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return self.state.address

    def method(self, path: str) -> grpc.aio.UnaryUnaryMultiCallable:
        """A unary callable for `path` that sends and returns bytes as they are."""
        call = self._methods.get(path)
        if call is None:
            # No serializers: the request bytes go out as they came in.
            call = self._methods[path] = self.channel.unary_unary(path)
        return call
