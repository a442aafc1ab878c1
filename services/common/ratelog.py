"""A log line that a flood of identical events cannot multiply."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class Throttled:
    """Logs at most one warning per `interval` seconds, with how many it held back.

    Why: some events are caused by clients (undecodable messages), so a client can
    send as many as it likes; a line each would let it fill the log.
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._last: float | None = None
        self.held = 0

    def warning(self, message: str, *args: object) -> None:
        """Log `message % args`, unless a line was logged less than `interval` ago."""
        now = self._clock()
        if self._last is not None and now - self._last < self._interval:
            self.held += 1
            return
        held, self.held, self._last = self.held, 0, now
        self._logger.warning(
            message + " (%d more since the last such line, at most one per %g s)",
            *args,
            held,
            self._interval,
        )
