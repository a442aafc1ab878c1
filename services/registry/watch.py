"""The change feed: one pump reads new events from the store and fans them out.

Each subscriber replays what it missed from the events table, then follows live
events through a bounded queue. The hand-over has no gap: a subscriber is
registered (and gets every event after the hub's position) before it replays up
to that position. A subscriber whose queue overflows, or who asks for history
that was pruned, gets a RESYNC event and continues from the revision it names.
Changes written by another replica sharing the database wake the pump through
the store's change signal (PostgreSQL LISTEN/NOTIFY, store/listen.py); the pump
also polls every `poll_seconds`, the safety net when a notification is missed or
the listening connection is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator

from services.registry.domain import Event, EventType
from services.registry.store import MetadataStore
from services.registry.store.base import ChangeSignal

_log = logging.getLogger(__name__)
_CLOSED = Event(0, EventType.BOOKMARK, model="\0closed")


class _Subscriber:
    def __init__(self, size: int) -> None:
        self.size = size
        self.items: deque[Event] = deque()
        self.ready = asyncio.Event()
        self.overflows = 0

    def offer(self, event: Event) -> None:
        if len(self.items) >= self.size:
            # Drop the backlog: the subscriber must re-list anyway, and memory stays bounded.
            self.items.clear()
            self.overflows += 1
            event = Event(event.revision, EventType.RESYNC)
        self.items.append(event)
        self.ready.set()

    async def next(self, timeout: float) -> Event | None:
        if not self.items:
            self.ready.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.ready.wait(), timeout)
        return self.items.popleft() if self.items else None


class WatchHub:
    """Fans store events out to any number of subscribers."""

    def __init__(
        self,
        store: MetadataStore,
        *,
        queue_size: int = 1000,
        poll_seconds: float = 1.0,
        bookmark_seconds: float = 30.0,
        batch: int = 500,
    ) -> None:
        self._store = store
        self._queue_size = queue_size
        self._poll_seconds = poll_seconds
        self._bookmark_seconds = bookmark_seconds
        self._batch = batch
        self._subs: set[_Subscriber] = set()
        self._wake = asyncio.Event()
        self._position = 0
        self._task: asyncio.Task[None] | None = None
        self._signal: ChangeSignal | None = None
        self._closed = False

    @property
    def subscriber_count(self) -> int:
        """How many subscribers are connected."""
        return len(self._subs)

    @property
    def position(self) -> int:
        """The revision of the last event fanned out."""
        return self._position

    async def start(self) -> None:
        """Start following the store from its current revision."""
        self._position = await self._store.current_revision()
        self._task = asyncio.create_task(self._pump(), name="registry-watch-pump")
        self._signal = self._store.listen(self.notify)
        if self._signal is not None:
            self._signal.start()

    @property
    def signal(self) -> ChangeSignal | None:
        """What wakes the pump on other replicas' changes; None when it only polls."""
        return self._signal

    def end_subscriptions(self) -> None:
        """End every subscription now and refuse new ones (the server is stopping)."""
        self._closed = True
        for sub in list(self._subs):
            sub.items.clear()
            sub.offer(_CLOSED)

    async def close(self) -> None:
        """Stop the pump and the change signal, and end every subscription."""
        self.end_subscriptions()
        if self._signal is not None:
            await self._signal.close()
            self._signal = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def notify(self) -> None:
        """A change was committed (here or, signalled, by another replica): read new
        events now rather than at the next poll. Coalesces: one flag, no queue."""
        self._wake.set()

    async def subscribe(self, since: int | None, model: str = "") -> AsyncIterator[Event]:
        """Events after `since` (or from now when None), then live ones; ends at close."""
        if self._closed:
            return
        sub = _Subscriber(self._queue_size)
        self._subs.add(sub)
        live_from = self._position
        try:
            cursor = live_from
            if since is not None:
                cursor = since
                oldest, current = await self._store.event_window()
                if since > current or since + 1 < oldest:
                    yield Event(current, EventType.RESYNC)
                    cursor = current
                async for event in self._replay(cursor, live_from):
                    cursor = event.revision
                    if _wanted(event, model):
                        yield event
            yield Event(cursor, EventType.BOOKMARK)
            async for event in self._follow(sub, cursor, model):
                yield event
        finally:
            self._subs.discard(sub)

    async def _replay(self, after: int, upto: int) -> AsyncIterator[Event]:
        """Events in (after, upto] from the store; a RESYNC if some were pruned meanwhile."""
        cursor = after
        while cursor < upto:
            events = await self._store.events_since(cursor, min(self._batch, upto - cursor))
            if not events or events[0].revision != cursor + 1:
                _, current = await self._store.event_window()
                yield Event(current, EventType.RESYNC)
                return
            for event in events:
                cursor = event.revision
                yield event

    async def _follow(self, sub: _Subscriber, cursor: int, model: str) -> AsyncIterator[Event]:
        sent = cursor
        while True:
            event = await sub.next(self._bookmark_seconds)
            if event is _CLOSED:
                return
            if event is None:
                if cursor > sent:
                    sent = cursor
                    yield Event(cursor, EventType.BOOKMARK)
                continue
            if event.type is EventType.RESYNC:
                cursor = sent = event.revision
                yield event
                continue
            if event.revision <= cursor:
                continue
            cursor = event.revision
            if _wanted(event, model):
                sent = cursor
                yield event

    async def _pump(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_seconds)
            self._wake.clear()
            try:
                await self._drain()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep the feed alive; the next poll retries
                _log.warning("watch: reading events failed", exc_info=True)

    async def _drain(self) -> None:
        while True:
            events = await self._store.events_since(self._position, self._batch)
            if not events:
                return
            if events[0].revision != self._position + 1:
                # This hub fell behind the kept history (another writer made many changes).
                _, current = await self._store.event_window()
                self._broadcast(Event(current, EventType.RESYNC))
                continue
            for event in events:
                self._broadcast(event)
            if len(events) < self._batch:
                return

    def _broadcast(self, event: Event) -> None:
        self._position = event.revision
        for sub in list(self._subs):
            sub.offer(event)


def _wanted(event: Event, model: str) -> bool:
    return not model or event.model == model or event.type is EventType.RESYNC
