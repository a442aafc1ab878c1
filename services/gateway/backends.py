"""A backend as the pool holds it (its channel and state), and how backends are called.

Every call to a backend carries the gateway's service token when one is set
(services.common.service_token): inference refuses calls without it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from services.common.service_token import call_metadata
from services.common.tls_client import DEFAULT_CHECK_SECONDS, ChannelSource, ClientTLS
from services.gateway.balancer import DEFAULT_PICKER, BackendState, Health
from services.gateway.mux import FRAME_HEADROOM, Multiplexer


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
    # The service token every backend call presents; None: calls carry none.
    backend_token: str | None = field(default=None, repr=False)
    # TLS to backends (CA, client cert for mutual TLS); None: plaintext.
    tls: ClientTLS | None = None
    # The least time between two stats of those TLS files.
    tls_check_seconds: float = DEFAULT_CHECK_SECONDS
    # Inference calls multiplexed on Forward streams (services.gateway.mux), over this
    # many connections per backend; 0: every call unary on the one channel.
    mux_connections: int = 0


@dataclass
class Backend:
    """A backend's channel and state; its callables are made once per method."""

    state: BackendState
    # The backend's channel, rebuilt when the TLS files change (see `channel`).
    source: ChannelSource
    # Sent on every call: the service token's `authorization` entry, if any.
    credentials: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    _methods: dict[str, Call] = field(default_factory=dict)
    _generation: int = 0
    # One health Watch per model the backend knows.
    watches: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    # The connections and streams inference calls are multiplexed on; None: unary.
    mux: Multiplexer | None = None

    @classmethod
    def connect(cls, address: str, options: PoolOptions) -> Backend:
        """A new backend: its long-lived channel, and the credentials its calls carry."""
        limit = options.max_message_bytes
        channel_options = [
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            # Reconnect quickly after a backend restarts.
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 2000),
        ]
        source = ChannelSource(
            address,
            options.tls,
            interceptors=options.interceptors,
            check_seconds=options.tls_check_seconds,
            options=channel_options,
        )
        mux = None
        if options.mux_connections > 0:
            # No interceptors: a trace context travels in each frame, not per stream.
            mux_options = [
                ("grpc.max_receive_message_length", limit + FRAME_HEADROOM),
                *channel_options[1:],
            ]
            mux = Multiplexer(
                address,
                options.mux_connections,
                tls=options.tls,
                options=mux_options,
                tls_check_seconds=options.tls_check_seconds,
                max_message_bytes=limit,
            )
        return cls(BackendState(address), source, call_metadata(options.backend_token), mux=mux)

    @property
    def address(self) -> str:
        return self.state.address

    @property
    def channel(self) -> grpc.aio.Channel:
        """The channel new calls start on; after a TLS rotation, a new one (the old
        one closes after a grace, so calls in flight on it finish)."""
        channel = self.source.current()
        if self.source.generation != self._generation:
            self._generation = self.source.generation
            self._methods.clear()
        return channel

    def method(self, path: str) -> Call:
        """A unary callable for `path` that sends and returns bytes as they are."""
        channel = self.channel  # first: a rotation clears the callables made on the old one
        call = self._methods.get(path)
        if call is None:
            # No serializers: the request bytes go out as they came in.
            call = self._methods[path] = Call(channel.unary_unary(path), self.credentials)
        return call

    async def close(self) -> None:
        """Close its channel and its multiplexed connections."""
        await self.channel.close()
        if self.mux is not None:
            await self.mux.close()

    def metadata(self, extra: Sequence[tuple[str, str]] = ()) -> tuple[tuple[str, str], ...]:
        """A call's metadata: the credentials, then `extra`."""
        return (*self.credentials, *extra)


@dataclass(frozen=True)
class Call:
    """A backend method that adds the backend's credentials to each call's metadata."""

    method: grpc.aio.UnaryUnaryMultiCallable
    credentials: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    def __call__(
        self, request: Any, *, metadata: Sequence[tuple[str, str]] = (), **kwargs: Any
    ) -> grpc.aio.UnaryUnaryCall:
        return self.method(request, metadata=(*self.credentials, *metadata), **kwargs)


def serving(backends: Iterable[Backend], model: str, version: int | None) -> list[Backend]:
    """The healthy backends with `model` (that version, or any; "": every healthy one)
    ready, as far as their catalogs say: those a call about the whole model asks."""
    return [
        b for b in backends if b.state.health is Health.HEALTHY and b.state.serves(model, version)
    ]
