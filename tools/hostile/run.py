"""One hostile run: start each system, replay every category under measurement, report."""

from __future__ import annotations

import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from tools.hostile.auth import run_auth
from tools.hostile.handmade import run_handmade
from tools.hostile.measure import Meter
from tools.hostile.mutated import run_mutated
from tools.hostile.names import run_names
from tools.hostile.report import Category, Report
from tools.hostile.reset import run_reset
from tools.hostile.slowloris import run_slowloris
from tools.hostile.streams import run_streams
from tools.hostile.system import ROOT, HostileSystem, start_system
from tools.hostile.uploads import run_uploads


@dataclass(frozen=True)
class Profile:
    """How much of each category: the full run of make hostile, or the short one of make test."""

    name: str
    # mode ("open": no auth, "auth": API keys) -> the categories run in it, in order
    modes: dict[str, tuple[str, ...]]
    mutated: int
    truncated: int
    names: int
    streams: int
    stream_requests: int
    slow_connections: int
    slow_hold_s: float
    reset_pairs: int


EVERY = ("mutated", "handmade", "auth", "names", "streams", "slowloris", "reset", "uploads")
FULL = Profile(
    name="full",
    modes={
        "open": ("mutated", "handmade", "names", "streams", "slowloris", "reset", "uploads"),
        "auth": ("mutated", "handmade", "auth", "names", "uploads"),
    },
    mutated=2000,
    truncated=335,
    names=100000,  # issue A, item 3: 100,000 random names, RSS and state flat
    streams=200,
    stream_requests=24,
    slow_connections=100,
    slow_hold_s=20.0,
    reset_pairs=20000,
)
SHORT = Profile(
    name="short",
    modes={"auth": EVERY},
    mutated=200,
    truncated=60,
    names=1000,
    streams=20,
    stream_requests=16,
    slow_connections=20,
    slow_hold_s=15.0,
    reset_pairs=2000,
)

Runner = Callable[[HostileSystem, Category, Meter, Profile], Awaitable[None]]


async def _mutated(system: HostileSystem, cat: Category, meter: Meter, p: Profile) -> None:
    await run_mutated(system, cat, p.mutated, p.truncated)


async def _handmade(system: HostileSystem, cat: Category, meter: Meter, p: Profile) -> None:
    await run_handmade(system, cat, meter, short=p.name == "short")


async def _auth(system: HostileSystem, cat: Category, meter: Meter, p: Profile) -> None:
    await run_auth(system, cat)


async def _names(system: HostileSystem, cat: Category, meter: Meter, p: Profile) -> None:
    await run_names(system, cat, p.names)


async def _streams(system: HostileSystem, cat: Category, meter: Meter, p: Profile) -> None:
    await run_streams(system, cat, meter, p.streams, p.stream_requests)


async def _slowloris(system: HostileSystem, cat: Category, meter: Meter, p: Profile) -> None:
    await run_slowloris(system, cat, p.slow_connections, p.slow_hold_s)


async def _reset(system: HostileSystem, cat: Category, meter: Meter, p: Profile) -> None:
    await run_reset(system, cat, p.reset_pairs)


async def _uploads(system: HostileSystem, cat: Category, meter: Meter, p: Profile) -> None:
    await run_uploads(system, cat)


# name -> (runner, whether its requests go one at a time: the stall and RSS goals apply)
CATEGORIES: dict[str, tuple[Runner, bool]] = {
    "mutated": (_mutated, True),
    "handmade": (_handmade, True),
    "auth": (_auth, True),
    "names": (_names, False),
    "streams": (_streams, False),
    "slowloris": (_slowloris, False),
    "reset": (_reset, False),
    "uploads": (_uploads, True),
}


def commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return ""


async def run_hostile(folder: Path, profile: Profile, only: list[str] | None = None) -> Report:
    """Every category in every mode of `profile`, each on a fresh system per mode."""
    categories: list[Category] = []
    for mode, wanted in profile.modes.items():
        names = [n for n in wanted if not only or n in only]
        if not names:
            continue
        system = await start_system(folder, auth=mode == "auth")
        meter = Meter(system)
        try:
            for name in names:
                runner, single = CATEGORIES[name]
                category = Category(name, mode, single=single)
                categories.append(category)
                with meter.category(category):
                    await runner(system, category, meter, profile)
                print(
                    f"hostile: {category.key}: {category.sent} sent in {category.seconds:.0f} s",
                    flush=True,
                )
        finally:
            meter.close()
            system.stop()
    return Report(categories, asdict(profile), str(folder), commit())
