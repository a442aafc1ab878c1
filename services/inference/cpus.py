"""The cores this process may really use: affinity and the cgroup CPU quota.

Why: `os.cpu_count()` is the host's count. In a container limited to 2 CPUs on a
64-core node, ONNX Runtime pools sized from it start 64 threads per instance that
the kernel throttles to 2 cores' worth of time, which is far slower than 2 threads.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


def cgroup_quota(root: Path = CGROUP) -> float | None:
    """CPUs allowed by the cgroup quota (v2 `cpu.max`, else v1 `cpu.cfs_*`); None: no limit."""
    try:
        text = (root / "cpu.max").read_text().split()
    except OSError:
        text = []
    if len(text) == 2:
        quota, period = text
        if quota == "max":
            return None
        return _ratio(quota, period)
    try:
        quota = (root / "cpu" / "cpu.cfs_quota_us").read_text().strip()
        period = (root / "cpu" / "cpu.cfs_period_us").read_text().strip()
    except OSError:
        return None
    return _ratio(quota, period)


def _ratio(quota: str, period: str) -> float | None:
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None  # v1 writes -1 for no limit


def available_cores(root: Path = CGROUP) -> int:
    """min(CPUs in this process's affinity, the cgroup quota rounded up), at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cores = os.cpu_count() or 1
    quota = cgroup_quota(root)
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)
