"""Reconnect backoff of the registry's followers: how long to wait before trying again."""

from __future__ import annotations

# The longest pause between reconnect attempts (before jitter): a registry back after
# an outage is followed again within about this long. The registry client's channel
# caps gRPC's own reconnect backoff to it too.
WATCH_MAX_BACKOFF = 2.0


def reconnect_delay(backoff: float, draw: float) -> float:
    """The pause before a Watch reconnects: `backoff` with jitter (`draw` in [0, 1)),
    from half to one and a half times it."""
    return backoff * (0.5 + draw)


def next_backoff(backoff: float, max_backoff: float = WATCH_MAX_BACKOFF) -> float:
    """The backoff after one more failed attempt: doubled, up to `max_backoff`."""
    return min(backoff * 2, max_backoff)
