"""A call's deadline as an event-loop time, read once per call by every service."""

from __future__ import annotations

import asyncio
from typing import Protocol, overload


class Timed(Protocol):
    """What a call's context tells of its deadline (grpc.aio.ServicerContext does)."""

    def time_remaining(self) -> float | None: ...


@overload
def deadline_of(context: Timed, default: float) -> float: ...
@overload
def deadline_of(context: Timed, default: None = None) -> float | None: ...
def deadline_of(context: Timed, default: float | None = None) -> float | None:
    """The call's deadline in event-loop time; `default` seconds from now when the caller
    gave none (None: no deadline)."""
    remaining = context.time_remaining()
    if remaining is None:
        remaining = default
    return None if remaining is None else asyncio.get_running_loop().time() + remaining


def earliest(deadline: float, other: float | None) -> float:
    """The sooner of two deadlines, `other` possibly absent."""
    return deadline if other is None else min(deadline, other)
