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


@dataclass
class Profile:
    """What the samples of one process spent their time on."""

    samples: int = 0
    top_self: list[tuple[str, float]] = field(default_factory=list)  # frame, share
    kinds: dict[str, float] = field(default_factory=dict)  # kind, share of samples


def available() -> bool:
    """Whether py-spy is built here."""
    return PY_SPY.exists()


def record(pid: int, seconds: float, out: Path, rate: int = 100) -> subprocess.Popen[bytes]:
    """Start sampling `pid` (and its subprocesses) for `seconds` into `out` (collapsed
    stacks), without pausing it; wait on the returned process."""
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
        "--nonblocking",
        "--subprocesses",
        "--output",
        str(out),
    ]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _frame(text: str) -> str:
    """'function (file:line)' without the line, so a function's lines add up."""
    return _FRAME_LINE.sub(")", text.strip())


def summarize(collapsed: str, top: int = 12) -> Profile:
    """The innermost frames by share of samples, and the share of each kind of work,
    from py-spy's raw output (`stack;frames;... count` per line)."""
    leaves: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        leaf = _frame(frames[-1])
        leaves[leaf] += count
        kinds[_kind(frames)] += count
    if not total:
        return Profile()
    return Profile(
        samples=total,
        top_self=[(frame, round(n / total, 3)) for frame, n in leaves.most_common(top)],
        kinds={kind: round(n / total, 3) for kind, n in kinds.most_common()},
    )


def _kind(frames: list[str]) -> str:
    """The kind of the innermost frame that has one (native frames name none)."""
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
) -> tuple[Level, list[dict[str, Any]]]:
    """Sample every process of every hop while `load` runs (about `seconds` of load
    after its spawn and warm-up); the load's level and one summary per hop, whose raw
    samples stay in `out/<hop>.txt`. The level is not a measurement: py-spy itself
    takes CPU from the same cores."""
    out.mkdir(parents=True, exist_ok=True)
    started = [
        (hop, path, record(pid, seconds + 2, path))
        for hop, pids in hops.items()
        for pid in pids
        for path in [out / f"{hop}-{pid}.txt"]
    ]
    level = load()
    found = []
    for hop, path, process in started:
        try:
            _, err = process.communicate(timeout=seconds + 60)
        except subprocess.TimeoutExpired:
            process.kill()
            _, err = process.communicate()
        if not path.exists():
            why = err.decode(errors="replace").strip()[-300:]
            found.append({"hop": hop, "path": str(path), "error": why or "no samples"})
            continue
        summary = summarize(path.read_text())
        found.append({"hop": hop, "path": str(path), **asdict(summary)})
    return level, found
