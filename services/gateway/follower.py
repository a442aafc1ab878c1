"""Keeps the route table in step with the registry: snapshot, then Watch from its revision.

On RESYNC (events were lost) it takes a new snapshot. Models that were created,
or got a version, are re-read on their own, by the next request that needs them
(`refresh`, in that request's trace). If the registry is unreachable, the last
table keeps serving and the follower retries.

Once loaded, the table is authoritative for absence: a model the registry creates
arrives as a MODEL_CREATED event, so a name the table lacks is unknown and costs
the registry nothing, however many such names clients send.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable

from services.common.backoff import WATCH_MAX_BACKOFF, next_backoff, reconnect_delay
from services.common.errors import NotFound, ServiceError
from services.gateway.routes import RouteTable
from services.registry.client import RegistryClient
from services.registry.domain import EventType, Snapshot

_log = logging.getLogger(__name__)


class RegistryFollower:
    """Runs the snapshot-and-watch loop in the background."""

    def __init__(
        self,
        client: RegistryClient,
        table: RouteTable,
        on_change: Callable[[], None] | None = None,
        *,
        min_backoff: float = 0.2,
        max_backoff: float = WATCH_MAX_BACKOFF,
    ) -> None:
        self.client = client
        self.table = table
        self.on_change = on_change
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.loaded = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # One re-read per model at a time; concurrent requests wait for it. Only models
        # in the table are re-read, so this holds registry names only.
        self._reading: dict[str, asyncio.Future[None]] = {}

    def needs_read(self, name: str) -> bool:
        """Whether a request for `name` must re-read it first: a model the Watch feed
        announced (created, or given a version) whose labels are not known yet."""
        model = self.table.models.get(name)
        return model is not None and model.stale

    async def refresh(self, name: str) -> None:
        """Re-read one model from the registry, once however many requests wait for it."""
        pending = self._reading.get(name)
        if pending is None:
            pending = asyncio.ensure_future(self._read(name))
            self._reading[name] = pending
            pending.add_done_callback(lambda _: self._reading.pop(name, None))
        await asyncio.shield(pending)

    async def _read(self, name: str) -> None:
        try:
            snapshot = await self.client.snapshot(name)
        except NotFound:
            snapshot = Snapshot(self.table.revision, [])
        self.table.replace_model(name, snapshot)
        if name in self.table.models:
            self.table.models[name].stale = False

    async def sync(self) -> None:
        """Load a snapshot, then apply events until a RESYNC (returns) or an error (raises)."""
        snapshot = await self.client.snapshot()
        self.table.load(snapshot)
        self.loaded.set()
        self._changed()
        _log.info(
            "registry snapshot loaded",
            extra={"revision": snapshot.revision, "models": len(snapshot.models)},
        )
        async for event in self.client.watch(snapshot.revision):
            if event.type is EventType.RESYNC:
                _log.info("registry asked for a resync", extra={"revision": event.revision})
                return
            self.table.apply(event)
            self._changed()

    async def run(self) -> None:
        """sync() forever, backing off while the registry fails."""
        backoff = self.min_backoff
        while True:
            try:
                await self.sync()
                backoff = self.min_backoff
            except ServiceError as exc:
                _log.warning(
                    "registry unreachable; serving the last known routes",
                    extra={"status": exc.status, "retry_seconds": round(backoff, 2)},
                )
                await asyncio.sleep(reconnect_delay(backoff, random.random()))
                backoff = next_backoff(backoff, self.max_backoff)

    def start(self) -> None:
        """Start following in the background."""
        if self._task is None:
            self._task = asyncio.ensure_future(self.run())

    async def close(self) -> None:
        """Stop following and close the client."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.client.close()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()
