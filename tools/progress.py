"""A plain-text progress bar on stderr, drawn only when stderr is a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO

_WIDTH = 30
_MIB = 1024 * 1024


class ProgressBar:
    """`[#####.....]  45%  12.3/27.0 MiB` for a transfer of `total` bytes."""

    def __init__(
        self, total: int, label: str, *, stream: TextIO | None = None, enabled: bool | None = None
    ) -> None:
        self.total = max(total, 0)
        self.label = label
        self.done = 0
        self._stream = stream if stream is not None else sys.stderr
        self._enabled = self._stream.isatty() if enabled is None else enabled
        self._drawn = 0.0

    def update(self, count: int) -> None:
        """`count` more bytes are done."""
        self.done += count
        now = time.monotonic()
        if self._enabled and (now - self._drawn >= 0.1 or self.done >= self.total):
            self._drawn = now
            self._draw()

    def close(self) -> None:
        """Finish the line."""
        if self._enabled:
            self._draw()
            self._stream.write("\n")
            self._stream.flush()

    def _draw(self) -> None:
        fraction = min(self.done / self.total, 1.0) if self.total else 1.0
        filled = int(fraction * _WIDTH)
        bar = "#" * filled + "." * (_WIDTH - filled)
        self._stream.write(
            f"\r{self.label} [{bar}] {fraction:4.0%} "
            f"{self.done / _MIB:.1f}/{self.total / _MIB:.1f} MiB"
        )
        self._stream.flush()
