"""The targets a run is judged by, computed from its series, and a Markdown table."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from tools.bench.stats import Level, Series

# The hops whose CPU per request the table shows (a peer is one hop).
HOPS = ("gateway", "inference", "peer")


@dataclass(frozen=True)
class Check:
    """One target: what was compared, the value reached, the goal, and whether it holds."""

    name: str
    value: float | None
    goal: str
    met: bool | None
    detail: str


def _find(
    series: Sequence[Series], model: str, target: str, batching: bool | None = True
) -> Series | None:
    for s in series:
        if (
            s.model == model
            and s.target == target
            and (batching is None or s.batching in (batching, None))
        ):
            return s
    return None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def checks(series: Sequence[Series], tiny: str = "digits", medium: str = "encoder") -> list[Check]:
    """The benchmark's four targets, from whatever this run measured."""
    out: list[Check] = []
    # (1) batching on vs off on the tiny model at concurrency 32, through the gateway if any.
    for target in ("gateway", "inference"):
        on, off = _find(series, tiny, target, True), _find(series, tiny, target, False)
        if on and off and on.at(32) and off.at(32) and on.batching and off.batching is False:
            value = _ratio(on.at(32).throughput, off.at(32).throughput)  # type: ignore[union-attr]
            out.append(
                Check(f"batching on/off, {tiny}, c=32, {target}", value, ">= 3", _ge(value, 3), "")
            )
            break
    # (2) served vs in-process ORT at the same effective batch size, highest level.
    for model, goal in ((medium, 0.9), (tiny, None)):
        ort = _find(series, model, "ort", None)
        for target in ("gateway", "inference"):
            served = _find(series, model, target, True)
            if not (ort and served and served.levels):
                continue
            level = max(served.levels, key=lambda lv: lv.concurrency)
            reference = ort.at(level.concurrency)
            if reference is None:
                continue
            value = _ratio(level.throughput, reference.throughput)
            detail = f"c={level.concurrency}, effective batch {level.effective_batch}"
            out.append(
                Check(
                    f"{target} vs in-process ORT, {model}",
                    value,
                    f">= {goal}" if goal else "as high as possible",
                    _ge(value, goal) if goal else None,
                    detail,
                )
            )
    # (3) the gateway's added latency at concurrency 1.
    gateway, direct = _find(series, tiny, "gateway", True), _find(series, tiny, "inference", True)
    if gateway and direct and gateway.at(1) and direct.at(1):
        added = round(gateway.at(1).latency_ms["p50"] - direct.at(1).latency_ms["p50"], 3)  # type: ignore[union-attr]
        out.append(
            Check(f"gateway p50 - direct p50, {tiny}, c=1 (ms)", added, "<= 1", added <= 1, "")
        )
    # (4) against the peers on the tiny model (KServe's gRPC: goals 1 and 2).
    for peer, target, goal in (
        ("pytriton", "inference", 1.0),
        ("kserve-http-binary", "gateway-http-binary", 1.0),
    ):
        ours, theirs = _find(series, tiny, target, True), _find(series, tiny, peer, None)
        if not (ours and theirs):
            continue
        for c in (1, 16):
            a, b = ours.at(c), theirs.at(c)
            if a and b:
                value = _ratio(a.throughput, b.throughput)
                out.append(
                    Check(
                        f"{target} vs {peer}, {tiny}, c={c}",
                        value,
                        f">= {goal}",
                        _ge(value, goal),
                        "",
                    )
                )
    return out


def _ge(value: float | None, goal: float | None) -> bool | None:
    return None if value is None or goal is None else value >= goal


def _le(value: float | None, goal: float) -> bool | None:
    return None if value is None else value <= goal


@dataclass(frozen=True)
class Goal:
    """One of issue G's goals: met only when every check in it is met."""

    number: int
    title: str
    checks: list[Check]

    @property
    def met(self) -> bool | None:
        """True when all are met, False when one is missed, None when one is unmeasured."""
        if any(c.met is False for c in self.checks):
            return False
        return None if any(c.met is None for c in self.checks) else True


def _cpu(level: Level | None, hops: Sequence[str]) -> float | None:
    """µs of CPU per request summed over `hops`, if every one was measured."""
    if level is None or not all(h in level.cpu_us_per_request for h in hops):
        return None
    return sum(level.cpu_us_per_request[h] for h in hops)


def goals(series: Sequence[Series], model: str = "digits", busy: int = 16) -> list[Goal]:
    """Goals 1 (throughput against KServe's single hop) and 2 (server CPU per request
    against KServe's, at c=`busy`), from ratios taken in this run."""
    kserve = _find(series, model, "kserve", None)
    gateway = _find(series, model, "gateway", True)
    direct = _find(series, model, "inference", True)

    def rate(s: Series | None, c: int) -> float | None:
        level = s.at(c) if s else None
        return level.throughput if level else None

    first: list[Check] = []
    for ours, c, target in ((gateway, busy, 1.0), (gateway, 1, 0.8), (direct, 1, 1.5)) + (
        (direct, busy, 1.5),
    ):
        name = "gateway" if ours is gateway else "inference direct"
        value = _ratio(rate(ours, c), rate(kserve, c))
        first.append(
            Check(
                f"{name} / KServe req/s, {model}, c={c}",
                value,
                f">= {target}x",
                _ge(value, target),
                "",
            )
        )
    theirs = _cpu(kserve.at(busy) if kserve else None, ("peer",))
    both = _cpu(gateway.at(busy) if gateway else None, ("gateway", "inference"))
    alone = _cpu(direct.at(busy) if direct else None, ("inference",))
    through = gateway.at(busy) if gateway else None
    hops = through.cpu_us_per_request if through else {}
    split = " + ".join(f"{h} {_opt(hops.get(h))}" for h in ("gateway", "inference"))
    second = []
    for name, ours_us, target, what in (
        ("gateway + inference", both, 0.6, f"{split} = "),
        ("inference alone (direct)", alone, 0.4, ""),
    ):
        value = _ratio(ours_us, theirs)
        detail = f"{what}{_opt(ours_us)} µs against KServe's {_opt(theirs)} µs"
        second.append(
            Check(
                f"{name} / KServe CPU per request, {model}, c={busy}",
                value,
                f"<= {target}x",
                _le(value, target),
                detail,
            )
        )
    return [
        Goal(1, "the whole stack beats the peers' single hop", first),
        Goal(2, "server CPU per request", second),
    ]


def goals_json(items: Sequence[Goal]) -> list[dict[str, Any]]:
    """The goals as JSON-ready dicts, each with its checks."""
    return [
        {"goal": g.number, "title": g.title, "met": g.met, "checks": checks_json(g.checks)}
        for g in items
    ]


def _verdict(met: bool | None) -> str:
    return "not measured" if met is None else ("met" if met else "missed")


def goals_text(items: Sequence[Goal]) -> str:
    """Each goal as met, missed or not measured, with its ratios and targets."""
    lines = []
    for g in items:
        lines.append(f"goal {g.number} ({g.title}): {_verdict(g.met)}")
        for c in g.checks:
            value = "-" if c.value is None else f"{c.value:.2f}x"
            detail = f"; {c.detail}" if c.detail else ""
            lines.append(f"  {c.name}: {value} (target {c.goal}{detail}) {_verdict(c.met)}")
    return "\n".join(lines)


def checks_json(items: Sequence[Check]) -> list[dict[str, Any]]:
    """The checks as JSON-ready dicts."""
    return [asdict(c) for c in items]


def markdown(series: Sequence[Series], items: Sequence[Check]) -> str:
    """A table of every level of every series, then the targets."""
    lines = [
        "| model | series | c | req/s | p50 ms | p90 ms | p99 ms | eff. batch "
        "| loadgen cores | server cores | CPU µs/req: " + " | ".join(HOPS) + " |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(HOPS),
    ]
    for s in series:
        for lv in s.levels:
            lat = lv.latency_ms
            hops = " | ".join(_opt(lv.cpu_us_per_request.get(h)) for h in HOPS)
            lines.append(
                f"| {s.model} | {s.label} | {lv.concurrency} | {lv.throughput:.1f} | "
                f"{lat['p50']:.2f} | {lat['p90']:.2f} | {lat['p99']:.2f} | "
                f"{_opt(lv.effective_batch)} | {_opt(lv.loadgen_cpu)} | {_opt(lv.server_cpu)} | "
                f"{hops} |"
            )
    if items:
        lines += ["", "| target | value | goal | met |", "|---|---:|---|---|"]
        for c in items:
            met = "-" if c.met is None else ("yes" if c.met else "**no**")
            detail = f" ({c.detail})" if c.detail else ""
            lines.append(f"| {c.name}{detail} | {_opt(c.value)} | {c.goal} | {met} |")
    return "\n".join(lines)


def _opt(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"
