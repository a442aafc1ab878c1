"""The figures of a hostile run: per category, what was sent and seen, and the goals."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from tools.hostile.leaks import find_leaks
from tools.hostile.wire import Outcome

STALL_GOAL_MS = 100.0  # make hostile; make test asserts 1 s (noisy machines)
RSS_GOAL_MB = 256.0  # per service per hostile request, beyond a legitimate one of its size
STREAM_ROUND_GOAL_MB = 16.0
# Idle and half-open connections are closed within the handshake timeout (10 s) and the
# metrics server's request timeout (5 s): a hold this long must see every one closed.
SLOW_HOLD_GOAL_S = 12.0  # a second round of unread streams, once the first has ended
# Statuses a client error must never get: they say the server failed.
SERVER_FAULTS = frozenset({"INTERNAL", "UNKNOWN"})
EXAMPLES = 8  # kept per list, so that a report stays readable


@dataclass
class Case:
    """One hand-made request and what it cost each service."""

    name: str
    code: str
    rss_mb: dict[str, float]
    reference_mb: dict[str, float] = field(default_factory=dict)
    stall_ms: dict[str, float] = field(default_factory=dict)
    # The same-size well-formed request's stall: what any message this large costs.
    reference_stall_ms: dict[str, float] = field(default_factory=dict)

    def excess_mb(self) -> dict[str, float]:
        """Growth beyond what the reference (the same bytes, well formed) cost."""
        return {s: mb - self.reference_mb.get(s, 0.0) for s, mb in self.rss_mb.items()}


@dataclass
class Category:
    """One category in one mode (open: no auth; auth: API keys)."""

    name: str
    mode: str
    # Requests one at a time on an otherwise idle system: the stall and RSS goals apply.
    single: bool = True
    sent: int = 0
    codes: dict[str, int] = field(default_factory=dict)  # not a Counter: asdict() garbles one
    leaks: list[dict[str, str]] = field(default_factory=list)
    leak_count: int = 0
    server_faults: list[dict[str, str]] = field(default_factory=list)
    server_fault_count: int = 0
    stall_ms: dict[str, float] = field(default_factory=dict)
    probe_errors: dict[str, int] = field(default_factory=dict)
    rss_growth_mb: dict[str, float] = field(default_factory=dict)
    cases: list[Case] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def key(self) -> str:
        return f"{self.mode}/{self.name}"

    def record(self, case: str, outcome: Outcome, paths: Iterable[str] = ()) -> None:
        """Count one client-visible outcome and check its message."""
        self.sent += 1
        self.codes[outcome.code] = self.codes.get(outcome.code, 0) + 1
        self.inspect(case, outcome, paths)
        if outcome.code in SERVER_FAULTS:
            self.server_fault_count += 1
            if len(self.server_faults) < EXAMPLES:
                self.server_faults.append(
                    {"case": case, "code": outcome.code, "message": outcome.message[:300]}
                )

    def inspect(self, case: str, outcome: Outcome, paths: Iterable[str] = ()) -> None:
        """Check a client-visible message (a status's, or a field of a reply) for leaks."""
        why = find_leaks(outcome.message, paths)
        if why:
            self.leak_count += 1
            if len(self.leaks) < EXAMPLES:
                self.leaks.append(
                    {
                        "case": case,
                        "code": outcome.code,
                        "why": "; ".join(why),
                        "message": outcome.message[:300],
                    }
                )

    def max_stall_ms(self) -> float:
        return max(self.stall_ms.values(), default=0.0)


@dataclass
class Goal:
    """One goal checked against one category's figures."""

    goal: str
    category: str
    met: bool
    detail: str


def goals(category: Category, stall_goal_ms: float = STALL_GOAL_MS) -> list[Goal]:
    """The issue's goals for one category."""
    key = category.key
    found = [
        Goal("no-leaks", key, category.leak_count == 0, f"{category.leak_count} leaking messages"),
        Goal(
            "no-server-faults",
            key,
            category.server_fault_count == 0,
            f"{category.server_fault_count} INTERNAL/UNKNOWN",
        ),
    ]
    tracebacks = category.figures.get("log_tracebacks")
    if isinstance(tracebacks, dict):
        total = sum(tracebacks.values())
        found.append(Goal("no-tracebacks", key, total == 0, f"{total} tracebacks logged"))
    if category.single:
        stall = category.max_stall_ms()
        found.append(Goal("stall", key, stall <= stall_goal_ms, f"{stall:.0f} ms"))
        if category.cases:
            worst = max(
                (max(c.excess_mb().values(), default=0.0) for c in category.cases), default=0.0
            )
        else:
            worst = max(category.rss_growth_mb.values(), default=0.0)
        found.append(Goal("rss", key, worst < RSS_GOAL_MB, f"{worst:.0f} MB"))
    second = category.figures.get("second_round_mb")
    if isinstance(second, dict):
        worst = max(second.values(), default=0.0)
        found.append(Goal("stream-rounds", key, worst < STREAM_ROUND_GOAL_MB, f"{worst:.1f} MB"))
    unexpected = category.figures.get("unexpected_codes")
    if isinstance(unexpected, list):
        found.append(
            Goal("expected-codes", key, not unexpected, f"{len(unexpected)} unexpected codes")
        )
    threads = category.figures.get("peak_thread_growth")
    per_kind = category.figures.get("connections_per_kind")
    if isinstance(threads, dict) and isinstance(per_kind, int):
        # A bounded pool grows by a few workers, not one per idle connection (2 kinds a port).
        worst = max(threads.values(), default=0)
        found.append(Goal("threads-bounded", key, worst < per_kind, f"+{worst} threads"))
    closed, hold = category.figures.get("closed_total"), category.figures.get("hold_s")
    if isinstance(closed, str) and isinstance(hold, float) and hold >= SLOW_HOLD_GOAL_S:
        done, opened = (int(n) for n in closed.split("/"))
        found.append(Goal("slow-closed", key, done == opened, f"{closed} closed in {hold:.0f} s"))
    bypasses = category.figures.get("bypasses")
    if isinstance(bypasses, list):
        found.append(Goal("no-bypass", key, not bypasses, f"{len(bypasses)} bypasses"))
    return found


@dataclass
class Report:
    """Every category of a run, the options it ran with, and where the logs are."""

    categories: list[Category]
    options: dict[str, Any]
    logs: str
    commit: str = ""
    when: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    def category(self, key: str) -> Category:
        return next(c for c in self.categories if c.key == key)

    def goals(self, stall_goal_ms: float = STALL_GOAL_MS) -> list[Goal]:
        return [g for c in self.categories for g in goals(c, stall_goal_ms)]

    def unmet(self, stall_goal_ms: float = STALL_GOAL_MS) -> list[Goal]:
        return [g for g in self.goals(stall_goal_ms) if not g.met]

    def table(self) -> str:
        """The figures as Markdown, one row per category."""
        lines = [
            "| mode | category | sent | status codes | longest stall | peak RSS growth "
            "| leaks | INTERNAL/UNKNOWN | notes |",
            "|---|---|---:|---|---:|---|---:|---:|---|",
        ]
        for c in self.categories:
            codes = ", ".join(f"{k} {n}" for k, n in sorted(c.codes.items(), key=lambda kv: -kv[1]))
            stall = max(c.stall_ms.items(), key=lambda kv: kv[1], default=("-", 0.0))
            rss = ", ".join(f"{s} {mb:.0f}" for s, mb in c.rss_growth_mb.items())
            lines.append(
                f"| {c.mode} | {c.name} | {c.sent} | {codes} | {stall[1]:.0f} ms ({stall[0]}) "
                f"| {rss} MB | {c.leak_count} | {c.server_fault_count} | {_notes(c)} |"
            )
        return "\n".join(lines)

    def summary(self, stall_goal_ms: float = STALL_GOAL_MS) -> str:
        """One short row per category, with the goals it missed: the docs' table."""
        lines = [
            "| mode | category | sent | status codes | longest stall | worst RSS growth "
            "| leaks | INTERNAL/UNKNOWN | goals not met |",
            "|---|---|---:|---|---:|---:|---:|---:|---|",
        ]
        for c in self.categories:
            top = sorted(c.codes.items(), key=lambda kv: -kv[1])
            codes = ", ".join(f"{k} {n:,}" for k, n in top[:4]) + (", ..." if len(top) > 4 else "")
            service, stall = max(c.stall_ms.items(), key=lambda kv: kv[1], default=("-", 0.0))
            unmet = [f"{g.goal} ({g.detail})" for g in goals(c, stall_goal_ms) if not g.met]
            lines.append(
                f"| {c.mode} | {c.name} | {c.sent:,} | {codes} | {stall:,.0f} ms ({service}) "
                f"| {_worst_rss(c)} | {c.leak_count} | {c.server_fault_count} "
                f"| {'; '.join(unmet) or '-'} |"
            )
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=str)


def _worst_rss(category: Category) -> str:
    """The largest growth: beyond the reference for a case, else over the category."""
    if category.cases:
        name, service, mb = max(
            ((c.name, s, mb) for c in category.cases for s, mb in c.excess_mb().items()),
            key=lambda t: t[2],
            default=("-", "-", 0.0),
        )
        return f"{mb:,.0f} MB ({service}, {name.split(': ', 1)[-1]})"
    service, mb = max(category.rss_growth_mb.items(), key=lambda kv: kv[1], default=("-", 0.0))
    return f"{mb:,.0f} MB ({service})"


def _notes(category: Category) -> str:
    parts = []
    for name, value in category.figures.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {_short(v)}" for k, v in value.items())
        elif isinstance(value, list):
            value = f"{len(value)}"
        parts.append(f"{name}: {_short(value)}")
    return "; ".join(parts)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)
