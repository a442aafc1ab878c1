"""Calls in flight, so a draining server stops once its real work is done.

A health Watch (every gateway keeps one per model) never ends by itself: grpc's
stop(grace) would wait the whole grace period for it. Watches are counted apart and
ended (status OK, after their NOT_SERVING) once everything else has finished.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator
from typing import Any

import grpc

from services.common.interceptor import (
    Behavior,
    WrappingInterceptor,
    responses_of,
    rewrap_handler,
)

# A stream that stays open for as long as the client likes and carries no work; its
# behavior writes with context.write and returns nothing (grpc_health's Watch).
WATCH = "/grpc.health.v1.Health/Watch"


class InFlight(WrappingInterceptor):
    """Counts the calls running now, health Watches aside; `idle()` waits for none."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._watches: set[asyncio.Future[Any]] = set()
        self._ending = False

    def end_watches(self) -> None:
        """End every open health Watch (each finishes with status OK)."""
        self._ending = True
        for watch in list(self._watches):
            watch.cancel()

    def _enter(self) -> None:
        self.count += 1
        self._idle.clear()

    def _leave(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def idle(self) -> None:
        """Return once no call is running (other than idle streams)."""
        while True:
            await self._idle.wait()
            # A call accepted just before the drain may not have reached its handler
            # yet: give the loop one more turn before calling the server idle.
            await asyncio.sleep(0)
            if self.count == 0:
                return

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if method == WATCH:
            return rewrap_handler(handler, lambda b: b, self._watch)

        def unary(behavior: Behavior) -> Behavior:
            async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
                self._enter()
                try:
                    return await behavior(request, context)
                finally:
                    self._leave()

            return handle

        def stream(behavior: Behavior) -> Behavior:
            async def handle(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                self._enter()
                try:
                    async for response in responses_of(behavior, request, context):
                        yield response
                finally:
                    self._leave()

            return handle

        return rewrap_handler(handler, unary, stream)

    def _watch(self, behavior: Behavior) -> Behavior:
        if not inspect.iscoroutinefunction(behavior):
            return behavior  # not the stock Watch: left as it is

        async def handle(request: Any, context: grpc.aio.ServicerContext) -> None:
            # Its own task, so that ending it ends this call normally; a client that
            # goes away still cancels both.
            watch = asyncio.ensure_future(behavior(request, context))
            self._watches.add(watch)
            try:
                await watch
            except asyncio.CancelledError:
                if not (self._ending and watch.cancelled()):
                    raise
            finally:
                self._watches.discard(watch)

        return handle


async def stop_when_idle(server: grpc.aio.Server, grace: float, inflight: InFlight) -> None:
    """server.stop(grace), cut short once only health Watches remain: they are ended."""
    stopping = asyncio.ensure_future(server.stop(grace))
    idle = asyncio.ensure_future(inflight.idle())
    try:
        await asyncio.wait({stopping, idle}, return_when=asyncio.FIRST_COMPLETED)
        if not stopping.done():
            inflight.end_watches()
        await stopping
    finally:
        idle.cancel()
