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
from tools.chaos.system import System


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

    @property
    def met(self) -> bool:
        return bool(self.skipped) or not self.goal_zero_failed or self.failed == 0


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


async def run_chaos(
    folder: Path,
    faults: Sequence[str],
    profile: Profile,
    load_options: LoadOptions,
    replicas: int = 2,
) -> Report:
    """Run the system under load through `faults` (keys of FAULTS), in order."""
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
    system = System(folder, replicas=replicas, netns_host=host)
    options = {"profile": asdict(profile), "load": asdict(load_options), "replicas": replicas}
    report = Report(rows, options, machine(), str(system.logs))
    with cleanup_on_signals(system, host):
        await system.start()
        load = Load(system.gateway.address if system.gateway else "", load_options)
        load.start()
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
            await load.stop()  # the requests still in flight belong to the last window
        for row, start, end in windows:
            window = load.window(start, end, load_options.slow_s)
            row.window = window
            row.sent, row.failed, row.recover_s = window.sent, window.failed, window.recover_s
            print(f"chaos: {row.fault}: sent {row.sent}, {window.statuses}", flush=True)
            for detail, count in window.details.items():
                print(f"chaos:     {count} x {detail}", flush=True)
    return report
