"""The faults, each injected under load; a Fault row says what its window cost.

A window runs from the injection until the system is whole again (the fault
undone, every replica serving the model) and then `settle_s` of requests that all
went well (given up after `max_settle_s`).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tools.chaos.load import OK, Load
from tools.chaos.system import Service, System


@dataclass(frozen=True)
class Profile:
    """How long each fault lasts: `full` for `make chaos`, `short` for `make test`."""

    baseline_s: float
    kill_observe_s: float
    hang_s: float
    net_s: float
    registry_down_s: float
    settle_s: float
    flip_timeout_s: float = 60.0
    max_settle_s: float = 60.0


FULL = Profile(
    baseline_s=10, kill_observe_s=10, hang_s=15, net_s=15, registry_down_s=30, settle_s=5
)
SHORT = Profile(baseline_s=3, kill_observe_s=3, hang_s=5, net_s=5, registry_down_s=5, settle_s=2)


@dataclass(frozen=True)
class Injected:
    """What a fault did: its window and a note for the table."""

    start: float
    end: float
    note: str = ""


FaultFn = Callable[[System, Load, Profile], Awaitable[Injected]]


async def _settle(profile: Profile, load: Load) -> float:
    """The end of the window: once the requests of the last `settle_s` all went well.

    A fault can outlast its undoing (a connection that stalled in a cut-off recovers
    at TCP's next retransmission), and what it costs belongs to its own row.
    """
    give_up = time.monotonic() + profile.max_settle_s
    while True:
        await asyncio.sleep(profile.settle_s)
        end = time.monotonic()
        await asyncio.sleep(load.options.deadline_s + 0.5)  # all started before `end` are done
        recent = [r for r in load.records if end - profile.settle_s <= r.start < end]
        clean = all(r.status == OK and r.end - r.start <= load.options.slow_s for r in recent)
        if (recent and clean) or time.monotonic() > give_up:
            return end


async def _exited(service: Service, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while service.alive():
        if time.monotonic() > deadline:
            service.kill()
            return
        await asyncio.sleep(0.05)


async def baseline(system: System, load: Load, profile: Profile) -> Injected:
    """No fault: what the load looks like on a whole system."""
    start = time.monotonic()
    await asyncio.sleep(profile.baseline_s)
    end = time.monotonic()
    # Going on through the faults makes no sense if the whole system answers nothing.
    while not any(r.status == OK for r in load.records):
        if time.monotonic() > end + load.options.deadline_s + 1:
            seen = {r.status for r in load.records}
            raise RuntimeError(f"no request succeeded before any fault ({seen}); see the logs")
        await asyncio.sleep(0.1)
    return Injected(start, end)


async def kill_replica(system: System, load: Load, profile: Profile) -> Injected:
    """SIGKILL one replica, let the rest carry the load, then start it again."""
    replica = system.replicas[0]
    start = time.monotonic()
    replica.signal(signal.SIGKILL)
    await _exited(replica, 10)
    await asyncio.sleep(profile.kill_observe_s)
    took = await system.restart(replica)
    return Injected(start, await _settle(profile, load), f"{replica.name} back in {took:.1f}s")


async def hang_replica(system: System, load: Load, profile: Profile) -> Injected:
    """SIGSTOP one replica (it holds its connections but never answers), later SIGCONT."""
    replica = system.replicas[1]
    start = time.monotonic()
    replica.signal(signal.SIGSTOP)
    try:
        await asyncio.sleep(profile.hang_s)
    finally:
        replica.signal(signal.SIGCONT)
    note = f"{replica.name} hung {profile.hang_s:.0f}s"
    return Injected(start, await _settle(profile, load), note)


def _netns_replica(system: System) -> Service:
    return next(r for r in system.replicas if r.host is not None)


async def degrade_network(system: System, load: Load, profile: Profile) -> Injected:
    """Delay and loss on the veth pair of the replica on its own host."""
    assert system.netns_host is not None
    start = time.monotonic()
    try:
        applied = system.netns_host.impair(delay_ms=50, loss_percent=5)
        await asyncio.sleep(profile.net_s)
    finally:
        system.netns_host.clear()
    return Injected(start, await _settle(profile, load), f"{applied}, {profile.net_s:.0f}s")


async def cut_off_replica(system: System, load: Load, profile: Profile) -> Injected:
    """Drop every packet to and from the replica on its own host, then let them through."""
    assert system.netns_host is not None
    replica = _netns_replica(system)
    start = time.monotonic()
    try:
        applied = system.netns_host.impair(delay_ms=0, loss_percent=100)
        await asyncio.sleep(profile.net_s)
    finally:
        system.netns_host.clear()
    await system.wait_models(replica)
    note = f"{replica.name} unreachable {profile.net_s:.0f}s ({applied})"
    return Injected(start, await _settle(profile, load), note)


async def registry_down(system: System, load: Load, profile: Profile) -> Injected:
    """SIGKILL the registry; start it again on its port after `registry_down_s`."""
    registry = system.registry
    assert registry is not None
    start = time.monotonic()
    registry.signal(signal.SIGKILL)
    await _exited(registry, 10)
    await asyncio.sleep(profile.registry_down_s)
    await system.restart(registry)
    return Injected(start, await _settle(profile, load), f"down {profile.registry_down_s:.0f}s")


async def alias_flip(system: System, load: Load, profile: Profile) -> Injected:
    """Register the next version and move `production` to it at once, under load."""
    start = time.monotonic()
    version = await system.register()
    await system.set_alias("production", version)
    flipped = time.monotonic()
    converged = None
    while time.monotonic() - flipped < profile.flip_timeout_s:
        recent = [r for r in load.records[-20:] if r.start > flipped]
        if len(recent) == 20 and all(r.status == OK and r.version == str(version) for r in recent):
            converged = time.monotonic() - flipped
            break
        await asyncio.sleep(0.1)
    note = (
        f"production -> v{version}; all answers from v{version} after {converged:.1f}s"
        if converged is not None
        else f"production -> v{version}; not all answers from it in {profile.flip_timeout_s:.0f}s"
    )
    return Injected(start, await _settle(profile, load), note)


async def rolling_restart(system: System, load: Load, profile: Profile) -> Injected:
    """SIGTERM each replica in turn; the next only once the last serves the model again."""
    start = time.monotonic()
    took, drained = [], []
    for replica in system.replicas:
        replica.terminate()
        stopping = time.monotonic()
        await _exited(replica, 40)
        drained.append(time.monotonic() - stopping)
        took.append(await system.restart(replica))
    note = (
        f"{len(took)} replicas, each exited in {max(drained):.1f}s at most after SIGTERM "
        f"and served again {max(took):.1f}s after its start"
    )
    return Injected(start, await _settle(profile, load), note)


# name -> (what the table calls it, the fault, whether 0 failed requests is the goal)
FAULTS: dict[str, tuple[str, FaultFn, bool]] = {
    "baseline": ("no fault (baseline)", baseline, True),
    "kill": ("replica SIGKILLed", kill_replica, True),
    "hang": ("replica SIGSTOPped, then SIGCONT", hang_replica, False),
    "netem": ("replica on netns: delay + 5% loss", degrade_network, False),
    "cut": ("replica on netns: cut off", cut_off_replica, False),
    "registry": ("registry down", registry_down, False),
    "flip": ("alias flip (production)", alias_flip, True),
    "rolling": ("rolling SIGTERM restart", rolling_restart, True),
}
NETNS_FAULTS = frozenset({"netem", "cut"})
