"""PostgreSQL LISTEN/NOTIFY as the change feed's wake-up across registry replicas.

Every write transaction that adds events also runs `pg_notify(CHANNEL, revision)`,
which PostgreSQL delivers to every listener when (and only if) it commits. Each
replica keeps one dedicated connection that LISTENs and calls `wake` on each
notification, so a Watch on replica A sees a change written through replica B at
once rather than at A's next poll. The poll stays as the safety net: while the
listening connection is down (it is reconnected with backoff), or when a
notification is lost, the feed is at most `watch_poll_seconds` late.

Nothing is queued here: `wake` sets the hub's flag, so a burst of notifications
costs one read of the events table however long it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable

_log = logging.getLogger(__name__)

# One channel per database: replicas sharing the database share it.
CHANNEL = "maas_registry_events"
NOTIFY_SQL = f"SELECT pg_notify('{CHANNEL}', ?)"
_CONNECT_SECONDS = 30.0  # an unreachable host must not stall the reconnect loop


class ChangeListener:
    """Calls `wake` on each notification on CHANNEL, reconnecting while it is open.

    Every `check_seconds` a round trip checks that the connection is still alive
    (a peer that died without closing the socket).
    """

    def __init__(
        self,
        url: str,
        wake: Callable[[], None],
        *,
        check_seconds: float = 30.0,
        min_backoff: float = 0.5,
        max_backoff: float = 30.0,
    ) -> None:
        self._url = url
        self._wake = wake
        self._check_seconds = check_seconds
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._task: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        self.backend_pid: int | None = None
        self.connects = 0

    @property
    def listening(self) -> bool:
        """Whether the listening connection is up now."""
        return self._listening.is_set()

    async def wait_listening(self) -> None:
        """Return once the listening connection is up (tests, and a ready start)."""
        await self._listening.wait()

    def start(self) -> None:
        """Connect and follow the channel in a task of its own."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="registry-change-listener")

    async def close(self) -> None:
        """Stop listening and close the connection."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        backoff, warned = self._min_backoff, False
        while True:
            try:
                await self._listen()  # returns only by raising
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - reconnect whatever broke the connection
                if self._listening.is_set():
                    # It was up, so this is a new outage: warn again, retry soon.
                    backoff, warned = self._min_backoff, False
                self._listening.clear()
                if not warned:
                    # Once per outage, not per attempt: the poll keeps the feed going.
                    _log.warning(
                        "watch: listening for registry changes failed (%s: %s); "
                        "polling until it reconnects",
                        type(exc).__name__,
                        error_text(exc),
                    )
                    warned = True
                else:
                    _log.debug("watch: reconnecting the change listener failed", exc_info=True)
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, self._max_backoff)

    async def _listen(self) -> None:
        import psycopg

        async with asyncio.timeout(_CONNECT_SECONDS):
            conn = await psycopg.AsyncConnection.connect(self._url, autocommit=True)
        try:
            async with asyncio.timeout(_CONNECT_SECONDS):
                await conn.execute(f"LISTEN {CHANNEL}")
            self.backend_pid = conn.info.backend_pid
            self.connects += 1
            if self.connects > 1:
                _log.info("watch: listening for registry changes again")
            self._listening.set()
            # Changes made while nobody listened were not notified: read them now.
            self._wake()
            while True:
                # Ends after `check_seconds`; the round trip then finds a dead peer.
                async for _ in conn.notifies(timeout=self._check_seconds):
                    self._wake()
                await conn.execute("SELECT 1")
        finally:
            with contextlib.suppress(Exception):
                await conn.close()


def error_text(exc: BaseException) -> str:
    """A driver error's message on one line, for the log only: libpq's names the host
    and the cause (such as "certificate verify failed"), never the password."""
    return "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())[:500]
