"""Server CPU per hop: the CPU seconds (user + system) of a process and everything it
forked, read with psutil, so that a server with workers or helper processes (Triton's
Python backend stubs, `--workers N`) counts whole."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import psutil  # type: ignore[import-untyped]  # no stubs in the dev extras


def tree_cpu_seconds(pid: int) -> float | None:
    """CPU seconds of `pid`, its reaped children and its live descendants; None if gone.

    A descendant that exits and is reaped moves its time into its parent's children
    times, so the total only grows while the root lives."""
    try:
        root = psutil.Process(pid)
        with root.oneshot():
            times = root.cpu_times()
            descendants = root.children(recursive=True)
    except psutil.Error:
        return None
    total = times.user + times.system + times.children_user + times.children_system
    for child in descendants:
        try:
            t = child.cpu_times()
        except psutil.Error:
            continue  # exited between the listing and the read
        total += t.user + t.system
    return total


def live_cpu_seconds(pid: int) -> float:
    """`tree_cpu_seconds` of a server that must still be running: RuntimeError if not."""
    seconds = tree_cpu_seconds(pid)
    if seconds is None:
        raise RuntimeError(f"server process {pid} is gone")
    return seconds


def hops_cpu_seconds(hops: Mapping[str, Sequence[int]]) -> dict[str, float] | None:
    """CPU seconds so far of each hop's processes (trees); None if any is gone."""
    out: dict[str, float] = {}
    for hop, pids in hops.items():
        total = 0.0
        for pid in pids:
            seconds = tree_cpu_seconds(pid)
            if seconds is None:
                return None
            total += seconds
        out[hop] = total
    return out


def spent(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """CPU seconds each hop spent between two readings."""
    return {hop: max(0.0, after[hop] - before[hop]) for hop in after if hop in before}
