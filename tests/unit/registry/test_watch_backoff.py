"""How long a Watch waits between reconnect attempts while the registry is down.

A gateway or replica whose Watch is still in a long backoff when the registry comes
back misses what changes meanwhile (an alias flip) until its next attempt: the chaos
run's alias flip, just after a 30 s registry outage, reached the gateway 6 s late.
"""

from __future__ import annotations

from services.common.backoff import WATCH_MAX_BACKOFF, next_backoff, reconnect_delay


def worst_pauses(outage_s: float, min_backoff: float = 0.2) -> list[float]:
    """The pauses of a watcher that starts failing at 0 until it tries after the
    outage ends, each with the longest jitter."""
    pauses, at, backoff = [], 0.0, min_backoff
    while at < outage_s:
        pause = reconnect_delay(backoff, 0.999)
        pauses.append(pause)
        at += pause
        backoff = next_backoff(backoff)
    return pauses


def test_after_a_long_outage_a_watch_tries_again_within_three_seconds() -> None:
    pauses = worst_pauses(300.0)
    assert max(pauses) <= 1.5 * WATCH_MAX_BACKOFF <= 3.0
    # The registry back at any moment is tried again within one pause.
    assert all(p <= 3.0 for p in worst_pauses(30.0))


def test_the_backoff_doubles_from_its_start_and_jitter_spreads_it() -> None:
    assert [round(b, 1) for b in (0.2, next_backoff(0.2), next_backoff(0.4))] == [0.2, 0.4, 0.8]
    assert next_backoff(1.5) == WATCH_MAX_BACKOFF
    assert reconnect_delay(1.0, 0.0) == 0.5 and reconnect_delay(1.0, 0.5) == 1.0
