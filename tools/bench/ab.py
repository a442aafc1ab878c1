"""`maas bench ab`: two flag sets of one maas hop, side by side, in one run.

    maas bench ab --a-flag=--event-loop=uvloop --b-flag=--event-loop=asyncio
    maas bench ab --hop gateway --b-flag=--no-backend-mux --rounds 10
    maas bench ab --b-flag='--workers 2' --concurrency 32

Both servers (two inference services, or two gateways in front of one inference
service) run at once, and each round loads A, then B, for `--seconds` each: a change
of machine speed during the run falls on both alike. Each round gives A's CPU per
request (the hop's process tree, user and system) over B's, and the run reports the
median of those ratios beside each side's median CPU per request and rate. Digits,
batching on, as in `maas bench`. Results: bench/results/<name>-ab.json.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

HELP = "two flag sets of one hop (inference or gateway) side by side: CPU per request, A/B"
MODEL = "digits"


@dataclass(frozen=True)
class Round:
    """One side's load in one round."""

    cpu_us_per_request: float
    requests_per_second: float
    inference_cpu_us_per_request: float | None  # the inference behind a gateway side


def split_flags(values: Sequence[str]) -> list[str]:
    """Flags as given (repeatable), each split as a shell would split it."""
    return [part for value in values for part in shlex.split(value)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The A/B run's flags."""
    parser.add_argument("--hop", choices=("inference", "gateway"), default="inference")
    parser.add_argument("--a-flag", action="append", default=[], help="a flag of side A")
    parser.add_argument("--b-flag", action="append", default=[], help="a flag of side B")
    parser.add_argument("--rounds", type=int, default=10, help="A then B, this many times")
    parser.add_argument("--concurrency", type=int, default=16, help="calls in flight")
    parser.add_argument("--seconds", type=float, default=3.0, help="measured per side a round")
    parser.add_argument("--processes", type=int, default=2, help="load generator processes")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--name", help="file name (default: the UTC date and time)")


@contextmanager
def _sides(hop: str, flags: dict[str, list[str]]) -> Iterator[tuple[dict[str, Any], Any]]:
    """Both sides' servers, serving; and the inference behind them for the gateway hop."""
    from tools.bench import models, servers

    model = models.load(MODEL)
    config = servers.batching_config(True)
    with ExitStack() as stack:

        def started(server: Any) -> Any:
            stack.callback(server.stop)
            servers.wait_for_grpc_ready(server.address, MODEL, server)
            return server

        behind = None
        if hop == "gateway":
            behind = started(servers.start_inference(MODEL, model.path, config))
            sides = {
                side: started(servers.start_gateway([behind.address], extra=extra))
                for side, extra in flags.items()
            }
        else:
            sides = {
                side: started(servers.start_inference(MODEL, model.path, config, extra=extra))
                for side, extra in flags.items()
            }
        yield sides, behind


def _measure(
    server: Any, behind: Any, payloads: tuple[bytes, ...], args: argparse.Namespace
) -> Round:
    from tools.bench.cpu import hops_cpu_seconds, spent
    from tools.bench.loadgen import LoadSpec, run_load
    from tools.bench.stats import cpu_per_request_us

    hops = {"own": [server.pid], **({"inference": [behind.pid]} if behind else {})}
    spec = LoadSpec(server.address, payloads, args.concurrency, args.seconds, 0.5, args.processes)
    before = hops_cpu_seconds(hops)
    result = run_load(spec)
    after = hops_cpu_seconds(hops)
    if before is None or after is None:
        raise RuntimeError(f"{server.name} exited:\n{server.logs()}")
    if result.errors:
        raise RuntimeError(f"{server.name} answered errors: {result.errors}")
    per_request = cpu_per_request_us(spent(before, after), max(1, result.completed))
    return Round(
        cpu_us_per_request=per_request["own"],
        requests_per_second=len(result.latencies) / result.window,
        inference_cpu_us_per_request=per_request.get("inference"),
    )


def summary(rounds: dict[str, list[Round]]) -> dict[str, Any]:
    """Each side's medians, and the median of the per-round A/B CPU ratios."""
    out: dict[str, Any] = {}
    for side, measured in rounds.items():
        behind = [r.inference_cpu_us_per_request for r in measured]
        out[side] = {
            "cpu_us_per_request": statistics.median(r.cpu_us_per_request for r in measured),
            "requests_per_second": statistics.median(r.requests_per_second for r in measured),
            "inference_cpu_us_per_request": (
                None if None in behind else statistics.median(cast(list[float], behind))
            ),
        }
    ratios = [
        a.cpu_us_per_request / b.cpu_us_per_request
        for a, b in zip(rounds["a"], rounds["b"], strict=True)
    ]
    out["cpu_ratios"] = ratios
    out["cpu_ratio_median"] = statistics.median(ratios)
    return out


def bench(args: argparse.Namespace, say: Callable[[str], None]) -> dict[str, Any]:
    """Start both sides, alternate their loads, and return the results document."""
    from tools.bench import models

    flags = {"a": split_flags(args.a_flag), "b": split_flags(args.b_flag)}
    payloads = models.payloads(models.load(MODEL), MODEL)
    rounds: dict[str, list[Round]] = {"a": [], "b": []}
    with _sides(args.hop, flags) as (sides, behind):
        for index in range(args.rounds):
            for side, server in sides.items():
                measured = _measure(server, behind, payloads, args)
                rounds[side].append(measured)
                say(
                    f"round {index + 1} {side}: {measured.cpu_us_per_request:.1f} µs/req, "
                    f"{measured.requests_per_second:.0f} req/s"
                )
    return {
        "schema": "maas-bench-ab/1",
        "hop": args.hop,
        "model": MODEL,
        "flags": flags,
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "rounds": {side: [asdict(r) for r in measured] for side, measured in rounds.items()},
        "summary": summary(rounds),
    }


def report(document: dict[str, Any]) -> str:
    """The run in a few lines."""
    result, flags = document["summary"], document["flags"]
    lines = []
    for side in ("a", "b"):
        s = result[side]
        behind = s["inference_cpu_us_per_request"]
        extra = f", inference behind it {behind:.1f} µs/req" if behind is not None else ""
        shown = " ".join(flags[side]) or "(defaults)"
        lines.append(
            f"{side}: {shown}: {document['hop']} {s['cpu_us_per_request']:.1f} µs/req, "
            f"{s['requests_per_second']:.0f} req/s{extra} (medians)"
        )
    ratios = ", ".join(f"{r:.3f}" for r in result["cpu_ratios"])
    lines.append(
        f"A/B CPU per request, c={document['concurrency']}: median {result['cpu_ratio_median']:.3f}"
        f" (rounds: {ratios})"
    )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Measure, print, and write bench/results/<name>-ab.json."""
    from tools.bench.textservers import write_results

    document = bench(args, print)
    print(report(document))
    write_results(document, args.out, args.name, "ab")
    return 0
