"""On-CPU profiles of a maas hop under load with Linux `perf` (Debian's linux-perf):
where each process's CPU time goes, by thread and by library, for docs/benchmarks.md.

py-spy's native mode pauses the process for each sample, so a thread caught in a
system call is over-weighted (a 0.1 µs `getpid` came to 11% of its samples). perf
samples the CPU clock instead and counts only time spent running; it sees no Python
frames, so the two answer different questions: perf how much is the interpreter, grpc's
core, the kernel or ONNX Runtime, and on which thread; py-spy which Python code."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tools.bench.sampling import sample_under_load
from tools.bench.stats import Level

# `perf report --sort pid,dso` rows: "  32.43%     6831:python   libpython3.11.so.1.0"
_ROW = re.compile(r"^\s*(\d+(?:\.\d+)?)%\s+(\d+):(\S+)\s+(\S.*?)\s*$")
# Libraries by what they do, first match wins.
LIBRARIES: tuple[tuple[str, str], ...] = (
    ("kernel", r"kernel|vmlinux|\[vdso\]"),
    ("interpreter", r"libpython|_asyncio\.|_socket\.|math\.|_ctypes\."),
    ("grpc", r"cygrpc|libgrpc"),
    ("ORT", r"onnxruntime"),
    ("event loop", r"uvloop|loop\.cpython"),
    ("protobuf", r"_message\.|protobuf|upb"),
    ("numpy", r"_multiarray|numpy"),
    ("libc", r"libc\.so|libstdc\+\+|ld-linux|libm\.so|libpthread"),
)


def available() -> bool:
    """Whether perf is installed here."""
    return shutil.which("perf") is not None


def record(pid: int, seconds: float, out: Path, rate: int = 999) -> subprocess.Popen[bytes]:
    """Start sampling every thread of `pid` on the CPU clock for `seconds` into `out`."""
    command = ["perf", "record", "-q", "-F", str(rate), "-p", str(pid), "-o", str(out)]
    command += ["--", "sleep", str(max(1, round(seconds)))]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def report(data: Path) -> str:
    """perf's table of sample shares by thread and library for one recording."""
    command = ["perf", "report", "-i", str(data), "--stdio", "--no-children", "-g", "none"]
    command += ["--sort", "pid,dso"]
    done = subprocess.run(command, capture_output=True, check=False, timeout=120)
    return done.stdout.decode(errors="replace")


def library(dso: str) -> str:
    """The kind of work a library's samples are."""
    for name, pattern in LIBRARIES:
        if re.search(pattern, dso):
            return name
    return "other"


def summarize(table: str, pid: int) -> dict[str, Any]:
    """Shares of one process's on-CPU samples: by thread (`loop` is the thread whose id
    is the process's, where asyncio runs; others by their name), by kind of library,
    and by kind of library within the loop thread (still as shares of the process)."""
    threads: dict[str, float] = defaultdict(float)
    libraries: dict[str, float] = defaultdict(float)
    loop: dict[str, float] = defaultdict(float)
    total = 0.0
    for line in table.splitlines():
        match = _ROW.match(line)
        if match is None:
            continue
        share, tid, comm, dso = float(match[1]), int(match[2]), match[3], match[4]
        thread = "loop" if tid == pid else comm
        total += share
        threads[thread] += share
        kind = library(dso)
        libraries[kind] += share
        if thread == "loop":
            loop[kind] += share

    def shares(parts: Mapping[str, float]) -> dict[str, float]:
        ordered = sorted(parts.items(), key=lambda item: -item[1])
        return {name: round(value / total, 3) for name, value in ordered} if total else {}

    return {"threads": shares(threads), "libraries": shares(libraries), "loop": shares(loop)}


def under_load(
    hops: Mapping[str, Sequence[int]],
    load: Callable[[], Level],
    seconds: float,
    out: Path,
) -> tuple[Level, list[dict[str, Any]]]:
    """Record every process of every hop while `load` runs; the load's level (perf
    costs the cores a few percent, so it is near a measurement but not one) and one
    summary per process, whose recording stays in `out/<hop>-<pid>.data`."""
    return sample_under_load(
        hops,
        load,
        out,
        ".data",
        lambda pid, path: record(pid, seconds, path),
        lambda path, pid: summarize(report(path), pid),
        wait=seconds + 60,
    )


def describe(hop: Mapping[str, Any], label: str) -> list[str]:
    """A hop's on-CPU profile in three printed lines."""
    if "error" in hop:
        return [f"perf {label} {hop['hop']}: {hop['error']}"]

    def joined(parts: Mapping[str, float]) -> str:
        return ", ".join(f"{name} {share:.0%}" for name, share in parts.items() if share >= 0.005)

    return [
        f"perf {label} {hop['hop']}: threads {joined(hop['threads'])}",
        f"    libraries {joined(hop['libraries'])}",
        f"    loop thread {joined(hop['loop'])}",
    ]
