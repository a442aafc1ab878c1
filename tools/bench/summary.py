"""The targets a run is judged by, computed from its series, and a Markdown table."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from tools.bench.stats import Series


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
    # (4) against the peers on the tiny model.
    for peer, target, goal in (
        ("kserve", "inference", 1.5),
        ("pytriton", "inference", 1.0),
        ("kserve", "gateway", 1.0),
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


def checks_json(items: Sequence[Check]) -> list[dict[str, Any]]:
    """The checks as JSON-ready dicts."""
    return [asdict(c) for c in items]


def markdown(series: Sequence[Series], items: Sequence[Check]) -> str:
    """A table of every level of every series, then the targets."""
    lines = [
        "| model | series | c | req/s | p50 ms | p90 ms | p99 ms | eff. batch "
        "| loadgen cores | server cores |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in series:
        for lv in s.levels:
            lat = lv.latency_ms
            lines.append(
                f"| {s.model} | {s.label} | {lv.concurrency} | {lv.throughput:.1f} | "
                f"{lat['p50']:.2f} | {lat['p90']:.2f} | {lat['p99']:.2f} | "
                f"{_opt(lv.effective_batch)} | {_opt(lv.loadgen_cpu)} | {_opt(lv.server_cpu)} |"
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
