"""Run one recorder per process of each hop while a load runs, then summarize each
recording: the part py-spy (tools/bench/profile.py) and perf
(tools/bench/perf_profile.py) share."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tools.bench.stats import Level

Recorder = Callable[[int, Path], "subprocess.Popen[bytes]"]
Summarizer = Callable[[Path, int], Mapping[str, Any]]


def sample_under_load(
    hops: Mapping[str, Sequence[int]],
    load: Callable[[], Level],
    out: Path,
    suffix: str,
    recorder: Recorder,
    summarizer: Summarizer,
    wait: float,
) -> tuple[Level, list[dict[str, Any]]]:
    """Record every process of every hop with `recorder(pid, path)` into
    `out/<hop>-<pid><suffix>` while `load` runs, waiting up to `wait` s for each
    recording after it; the load's level and one summary per process (or its error)."""
    out.mkdir(parents=True, exist_ok=True)
    started = [
        (hop, pid, path, recorder(pid, path))
        for hop, pids in hops.items()
        for pid in pids
        for path in [out / f"{hop}-{pid}{suffix}"]
    ]
    level = load()
    found = []
    for hop, pid, path, process in started:
        try:
            _, err = process.communicate(timeout=wait)
        except subprocess.TimeoutExpired:
            process.kill()
            _, err = process.communicate()
        if not path.exists():
            why = err.decode(errors="replace").strip()[-300:]
            found.append({"hop": hop, "path": str(path), "error": why or "no samples"})
            continue
        found.append({"hop": hop, "path": str(path), **summarizer(path, pid)})
    return level, found
