"""One chaos run: start the system, put it under load, inject the faults in turn, report."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import platform
import signal
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tools.chaos.faults import FAULTS, NETNS_FAULTS, Profile
from tools.chaos.hosts import NetnsHost, NetnsUnavailable
from tools.chaos.load import Load, LoadOptions, Window
from tools.chaos.streams import StreamLoad, StreamOptions, StreamWindow
from tools.chaos.system import System

ROOT = Path(__file__).resolve().parents[2]
DEMO_MODELS = ROOT / ".data" / "demo-models"


@dataclass
class Row:
    """One line of the table."""

    key: str
    fault: str
    goal_zero_failed: bool
    sent: int = 0
    failed: int = 0
    recover_s: float = 0.0
    note: str = ""
    skipped: str = ""
    window: Window | None = None
    streams: StreamWindow | None = None

    @property
    def met(self) -> bool:
        """The row's goal, and for every fault: no stream cut without a clear status."""
        if self.skipped:
            return True
        if self.streams is not None and self.streams.silent:
            return False
        return not self.goal_zero_failed or self.failed == 0


@dataclass
class Report:
    """Every row, the options they were measured with, and where the logs are."""

    rows: list[Row]
    options: dict[str, object]
    machine: dict[str, object]
    logs: str
    when: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    def row(self, key: str) -> Row:
        return next(r for r in self.rows if r.key == key)

    def unmet(self) -> list[Row]:
        return [r for r in self.rows if not r.met]

    def table(self) -> str:
        """The table as Markdown."""
        lines = [
            "| fault | requests sent | failed | time to recover | notes |",
            "|---|---:|---:|---:|---|",
        ]
        for r in self.rows:
            if r.skipped:
                lines.append(f"| {r.fault} | - | - | - | skipped: {r.skipped} |")
                continue
            codes = ""
            if r.window is not None and r.failed:
                bad = {s: n for s, n in r.window.statuses.items() if s != "OK"}
                codes = " (" + ", ".join(f"{s} {n}" for s, n in sorted(bad.items())) + ")"
            goal = " **goal: 0**" if r.goal_zero_failed and r.key != "baseline" else ""
            p99 = f"p99 {r.window.p99_ms:.0f} ms" if r.window else ""
            note = "; ".join(x for x in (r.note, p99) if x)
            lines.append(
                f"| {r.fault} | {r.sent} | {r.failed}{codes}{goal} | {r.recover_s:.1f} s | {note} |"
            )
        streams = [r for r in self.rows if r.streams is not None]
        if streams:
            lines += [
                "",
                "| fault | streams ended | complete | cut, with a clear status | "
                "cut after tokens | cut without a status **goal: 0** |",
                "|---|---:|---:|---:|---:|---:|",
            ]
            for r in streams:
                w = r.streams
                assert w is not None
                bad = {s: n for s, n in w.outcomes.items() if s not in ("COMPLETE", "SILENT")}
                codes = " (" + ", ".join(f"{s} {n}" for s, n in sorted(bad.items())) + ")"
                lines.append(
                    f"| {r.fault} | {w.sent} | {w.complete} | {w.cut}{codes if bad else ''} "
                    f"| {w.cut_after_tokens} | {w.silent} |"
                )
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def machine() -> dict[str, object]:
    """What the figures were measured on."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_1m_at_start": round(os.getloadavg()[0], 2),
    }


@contextlib.contextmanager
def cleanup_on_signals(system: System, host: NetnsHost | None) -> Iterator[None]:
    """SIGTERM/SIGINT and interpreter exit stop the services and remove the namespace."""

    def cleanup() -> None:
        system.stop()
        if host is not None:
            host.remove()

    def on_signal(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    atexit.register(cleanup)
    try:
        yield
    finally:
        cleanup()
        atexit.unregister(cleanup)
        for s, handler in previous.items():
            signal.signal(s, handler)


def demo_model(name: str) -> Path:
    """The built demo model directory (tools/demo), built first if it is not current;
    the same folder the tests build into."""
    from tools.demo import smollm2

    builders = {smollm2.NAME: smollm2.build}
    if name not in builders:
        raise ValueError(f"no demo generator named {name!r}: expected one of {list(builders)}")
    model_dir = DEMO_MODELS / name
    builders[name](model_dir)
    return model_dir


def fill(windows: list[tuple[Row, float, float]], load: Load, streams: StreamLoad | None) -> None:
    """Each row's figures: the requests started in its window, the streams that ended in it."""
    for row, start, end in windows:
        window = load.window(start, end, load.options.slow_s)
        row.window = window
        row.sent, row.failed, row.recover_s = window.sent, window.failed, window.recover_s
        print(f"chaos: {row.fault}: sent {row.sent}, {window.statuses}", flush=True)
        for detail, count in window.details.items():
            print(f"chaos:     {count} x {detail}", flush=True)
        if streams is not None:
            row.streams = streams.window(start, end)
            print(f"chaos:   streams: {row.streams.outcomes}", flush=True)
            for detail, count in row.streams.details.items():
                print(f"chaos:     {count} x {detail}", flush=True)


async def run_chaos(
    folder: Path,
    faults: Sequence[str],
    profile: Profile,
    load_options: LoadOptions,
    replicas: int = 2,
    stream_options: StreamOptions | None = None,
) -> Report:
    """Run the system under load through `faults` (keys of FAULTS), in order; with
    `stream_options`, generation streams of the smollm2 demo run beside the load."""
    folder.mkdir(parents=True, exist_ok=True)
    host: NetnsHost | None = None
    rows = [Row(k, FAULTS[k][0], FAULTS[k][2]) for k in faults]
    if NETNS_FAULTS & set(faults):
        try:
            host = NetnsHost.create()
        except NetnsUnavailable as exc:
            print(f"chaos: skipping the network faults: {exc}", flush=True)
            for row in rows:
                if row.key in NETNS_FAULTS:
                    row.skipped = str(exc)
    generator = None
    if stream_options is not None:
        generator = (stream_options.model, demo_model(stream_options.model))
    system = System(folder, replicas=replicas, netns_host=host, generator=generator)
    options: dict[str, object] = {
        "profile": asdict(profile),
        "load": asdict(load_options),
        "streams": asdict(stream_options) if stream_options else None,
        "replicas": replicas,
    }
    report = Report(rows, options, machine(), str(system.logs))
    with cleanup_on_signals(system, host):
        await system.start()
        target = system.gateway.address if system.gateway else ""
        load = Load(target, load_options)
        streams = StreamLoad(target, stream_options) if stream_options else None
        load.start()
        if streams is not None:
            streams.start()
        windows: list[tuple[Row, float, float]] = []
        try:
            for row in rows:
                if row.skipped:
                    continue
                print(f"chaos: {row.fault} ...", flush=True)
                try:
                    injected = await FAULTS[row.key][1](system, load, profile)
                except NetnsUnavailable as exc:
                    print(f"chaos:   skipped: {exc}", flush=True)
                    row.skipped = str(exc)
                    continue
                row.note = injected.note
                windows.append((row, injected.start, injected.end))
        finally:
            # the requests and streams still in flight belong to the last window
            await load.stop()
            if streams is not None:
                await streams.stop()
        fill(windows, load, streams)
    return report
