"""Profiles of a maas hop under load: py-spy (from `.bench/prof`, built by
`tools/bench/venvs.sh prof`) samples a running server, and the samples are summed into
the frames that spend the time and a few named kinds of work, for docs/benchmarks.md."""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tools.bench.sampling import sample_under_load
from tools.bench.servers import ROOT
from tools.bench.stats import Level

PY_SPY = ROOT / ".bench" / "prof" / "bin" / "py-spy"
# What a sample's innermost frame is spent on, first match wins: (kind, pattern over
# "function (file:line)").
KINDS: tuple[tuple[str, str], ...] = (
    ("ORT run", r"onnxruntime"),
    ("protobuf parse/serialize", r"google/protobuf|FromString|ParseFromString|SerializeToString"),
    ("wire scan", r"services/gateway/wire\.py"),
    ("grpc aio machinery", r"grpc/|_cython|cygrpc"),
    ("event loop", r"asyncio/|uvloop|selectors\.py"),
    ("maas code", r"services/"),
)
_FRAME_LINE = re.compile(r":\d+\)$")
# Frames of the C runtime under everything: libc (syscalls), the interpreter, its C modules.
_RUNTIME = re.compile(r"\((libc\.so|libpthread|libpython|ld-linux)|\.c\)$|\.c\.h\)$")
# A thread blocked, not running: an idle poller, an instance thread waiting for work.
_WAITING = re.compile(
    r"^(epoll_wait|epoll_pwait|poll|pthread_cond_wait|pthread_cond_timedwait|sem_wait|"
    r"sem_timedwait|__futex\w*|nanosleep|clock_nanosleep) |PyThread_acquire_lock_timed|"
    r"SimpleQueue_get|select_epoll_poll"
)


@dataclass
class Profile:
    """What the samples of one process spent their time on."""

    samples: int = 0
    waiting: float = 0.0  # share of the samples that were blocked, not running
    top_self: list[tuple[str, float]] = field(default_factory=list)  # frame, busy share
    kinds: dict[str, float] = field(default_factory=dict)  # kind, share of busy samples


def available() -> bool:
    """Whether py-spy is built here."""
    return PY_SPY.exists()


def record(
    pid: int, seconds: float, out: Path, rate: int = 100, native: bool = True
) -> subprocess.Popen[bytes]:
    """Start sampling `pid` (and its subprocesses) for `seconds` into `out` (collapsed
    stacks); wait on the returned process. `native`: with the C frames (grpc's core and
    Cython layer, protobuf's upb, ONNX Runtime), which needs a short pause per sample;
    without, the process is never paused but grpc.aio's work all shows as `Handle._run`."""
    command = [
        str(PY_SPY),
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, round(seconds))),
        "--rate",
        str(rate),
        "--format",
        "raw",
        "--subprocesses",
        "--output",
        str(out),
        "--native" if native else "--nonblocking",
    ]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _frame(text: str) -> str:
    """'function (file:line)' without the line, so a function's lines add up; a native
    frame without a symbol ('0x7f.. (lib.so)') as its library."""
    text = _FRAME_LINE.sub(")", text.strip())
    if text.startswith("0x") and "(" in text:
        return "[" + text.split("(", 1)[1].rstrip(")").rsplit("/", 1)[-1] + "]"
    return text


def _leaf(frames: list[str]) -> str:
    """The innermost frame, and for a C library's (a syscall, the interpreter) the
    first caller outside them: `sendmsg in [cygrpc...so]`."""
    leaf = _frame(frames[-1])
    if not _RUNTIME.search(frames[-1]):
        return leaf
    for frame in reversed(frames[:-1]):
        if not _RUNTIME.search(frame):
            return f"{leaf.split(' (', 1)[0]} in {_frame(frame)}"
    return leaf


def summarize(collapsed: str, top: int = 12) -> Profile:
    """The innermost frames by share of the busy samples, the share of each kind of
    work, and the share of samples that were waiting, from py-spy's raw output
    (`stack;frames;... count` per line). With native frames py-spy samples threads
    that wait too (a thread blocked in epoll or on a queue); those are set apart."""
    leaves: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    total = waiting = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        if any(_WAITING.search(f) for f in frames[-5:]):
            waiting += count
            continue
        leaves[_leaf(frames)] += count
        kinds[_kind(frames)] += count
    busy = total - waiting
    if not busy:
        return Profile(samples=total, waiting=1.0 if total else 0.0)
    return Profile(
        samples=total,
        waiting=round(waiting / total, 3),
        top_self=[(frame, round(n / busy, 3)) for frame, n in leaves.most_common(top)],
        kinds={kind: round(n / busy, 3) for kind, n in kinds.most_common()},
    )


def _kind(frames: list[str]) -> str:
    """The kind of the innermost frame that has one (libc and the interpreter name none)."""
    for frame in reversed(frames):
        for kind, pattern in KINDS:
            if re.search(pattern, frame):
                return kind
    return "other"


def under_load(
    hops: Mapping[str, Sequence[int]],
    load: Callable[[], Level],
    seconds: float,
    out: Path,
    native: bool = True,
) -> tuple[Level, list[dict[str, Any]]]:
    """Sample every process of every hop while `load` runs (about `seconds` of load
    after its spawn and warm-up); the load's level and one summary per hop, whose raw
    samples stay in `out/<hop>-<pid>.txt`. The level is not a measurement: py-spy itself
    takes CPU from the same cores."""
    return sample_under_load(
        hops,
        load,
        out,
        ".txt",
        lambda pid, path: record(pid, seconds + 2, path, native=native),
        lambda path, _: asdict(summarize(path.read_text())),
        wait=seconds + 60,
    )


@dataclass(frozen=True)
class Profiler:
    """One way to profile a hop, as `maas bench --profile` runs it."""

    name: str
    missing: str | None  # why it cannot run here, if it cannot
    under_load: Callable[
        [Mapping[str, Sequence[int]], Callable[[], Level], float, Path],
        tuple[Level, list[dict[str, Any]]],
    ]
    describe: Callable[[Mapping[str, Any], str], list[str]]


def profiler(perf: bool, native: bool = True) -> Profiler:
    """perf (tools/bench/perf_profile.py) or py-spy, with `native` C frames or not."""
    if perf:
        from tools.bench import perf_profile

        missing = None if perf_profile.available() else "perf missing (apt-get install linux-perf)"
        return Profiler("perf", missing, perf_profile.under_load, perf_profile.describe)
    missing = None if available() else f"{PY_SPY} missing (tools/bench/venvs.sh prof)"

    def sampled(
        hops: Mapping[str, Sequence[int]], load: Callable[[], Level], seconds: float, out: Path
    ) -> tuple[Level, list[dict[str, Any]]]:
        return under_load(hops, load, seconds, out, native=native)

    return Profiler("py-spy", missing, sampled, describe)


def describe(hop: Mapping[str, Any], label: str, frames: int = 8) -> list[str]:
    """A hop's profile in a few printed lines: its kinds of work, then its top frames."""
    kinds = ", ".join(f"{k} {v:.0%}" for k, v in hop.get("kinds", {}).items())
    lines = [
        f"profile {label} {hop['hop']}: {hop.get('samples', 0)} samples, "
        f"{hop.get('waiting', 0):.0%} waiting; of the rest: {kinds or hop.get('error', '')}"
    ]
    lines += [f"    {share:6.1%}  {frame}" for frame, share in hop.get("top_self", [])[:frames]]
    return lines
