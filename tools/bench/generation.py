"""`maas bench generation`: streamed generation through the gateway against the
engine in-process (the limit), and llama.cpp's server on the same GGUF where
`llama-cpp-python` is installed in .bench/llamacpp.

    python -m tools.bench generation                    # 1, 4, 16 streams, 10 s each
    python -m tools.bench generation --concurrency 1,16 --seconds 5 --max-tokens 32

Every target gets the same greedy chat requests (a fixed list of prompts; max_tokens
0.75, 1 and 1.25 times --max-tokens in turn), with N streams each starting its next
request when the last one ends.
Levels are interleaved (served, in-process, peer at 1 stream, then at 4, ...) so
the ratios, taken within one run, see the same machine load.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import resource
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

from tools.bench.engine_worker import EngineWorker
from tools.bench.gen_requests import (
    PROMPTS,
    length,
    messages,
    served_driver,
    warm,
)
from tools.bench.textload import Driver, measure
from tools.bench.textservers import DEMO_MODELS

MODEL = "smollm2"
SERVED = "gateway (gRPC stream)"
DIRECT = "inference (gRPC stream, direct)"
ENGINE = "engine in-process"
PEER = "llama.cpp server"
HELP = "output tokens/s, TTFT, TPOT: served (smollm2) vs the engine in-process"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The generation benchmark's flags."""
    parser.add_argument("--concurrency", type=_ints, default=[1, 4, 16], help="streams")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured per level")
    parser.add_argument(
        "--rounds", type=int, default=1, help="times over all levels; ratios of the means"
    )
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured per level")
    parser.add_argument("--max-tokens", type=int, default=64, help="per request")
    parser.add_argument("--gateway", help="a running gateway serving the model")
    parser.add_argument("--model", default=MODEL, help="served model name")
    parser.add_argument(
        "--models-dir", type=Path, default=DEMO_MODELS, help="where demo models are built"
    )
    parser.add_argument("--prebuilt", type=Path, help="a built model directory: no build")
    parser.add_argument("--no-in-process", action="store_true", help="skip the engine")
    parser.add_argument("--no-peer", action="store_true", help="skip llama.cpp")
    parser.add_argument(
        "--no-direct", action="store_true", help="skip inference without the gateway"
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--name", default="", help="file name (default: UTC date-time)")


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


@dataclass
class Target:
    """One thing measured: drivers run in this process (`make` gives one for a
    max_tokens), or the engine worker's process, which runs its own."""

    label: str
    pids: list[int]  # processes whose CPU is the server's
    make: Callable[[int], Driver] | None = None
    worker: EngineWorker | None = None

    async def warm(self, max_tokens: int) -> None:
        """One whole request (for max_tokens 1: once the target has dropped the
        cancelled ones, as llama.cpp's server queues and may finish abandoned ones)."""
        if self.worker is not None:
            await self.worker.ask(op="warm", max_tokens=max_tokens)
        else:
            assert self.make is not None
            await warm(self.make(max_tokens), self.label)

    async def level(self, c: int, args: argparse.Namespace) -> dict[str, Any]:
        """One level's row."""
        if self.worker is not None:
            row = await self.worker.ask(
                op="level",
                concurrency=c,
                seconds=args.seconds,
                warmup=args.warmup,
                max_tokens=args.max_tokens,
            )
            return {"label": self.label, **row}
        from tools.bench.loadgen import children_cpu_seconds

        assert self.make is not None
        before_self = _self_cpu()
        before = children_cpu_seconds(self.pids) if self.pids else None
        started = asyncio.get_running_loop().time()
        level = await measure(self.make(args.max_tokens), c, args.seconds, args.warmup)
        elapsed = asyncio.get_running_loop().time() - started
        after = children_cpu_seconds(self.pids) if self.pids else None
        row = {"label": self.label, **asdict(level)}
        row["client_cpu"] = round((_self_cpu() - before_self) / elapsed, 2)
        if before is not None and after is not None:
            row["server_cpu"] = round((after - before) / elapsed, 2)
        return row


def describe(row: dict[str, Any]) -> str:
    """One line per level, as it is measured."""
    ttft, tpot = row["ttft_ms"], row["tpot_ms"]
    return (
        f"{row['label']:<32} streams={row['concurrency']:<3} "
        f"{row['tokens_per_second']:>7.1f} tok/s  "
        f"TTFT p50 {ttft['p50']:.0f} ms p99 {ttft['p99']:.0f} ms  "
        f"TPOT p50 {tpot['p50']:.1f} ms  done {row['requests_done']}  "
        f"tok/req {row['tokens_per_request']}  errors {row['errors']} "
        f"{row['error_samples'][:1]}"
    )


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def bench(
    args: argparse.Namespace, served: str | None, say: Callable[[str], None]
) -> dict[str, Any]:
    """Every level of every target, interleaved by level; the results document."""
    import grpc
    from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

    from tools.bench import llamacpp

    targets: list[Target] = []
    closers: list[Callable[[], Awaitable[None]]] = []
    notes: list[str] = []
    peer = None
    try:
        for label, address, pids in (
            (SERVED, served, args.pids),
            (DIRECT, args.direct, [args.direct_pid]),
        ):
            if not address or (label == DIRECT and args.no_direct):
                continue
            channel = grpc.aio.insecure_channel(address)
            closers.append(channel.close)
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            targets.append(Target(label, pids, partial(served_driver, stub, args.model)))
        if not args.no_in_process:
            worker = await EngineWorker.start(args.model_dir)
            closers.append(worker.close)
            targets.append(Target(ENGINE, [worker.pid], worker=worker))
        if not args.no_peer:
            peer, why = llamacpp.start(_gguf())
            if peer is None:
                notes.append(f"llama.cpp not measured: {why}")
                say(f"note: {notes[-1]}")
            else:
                address = peer.http_address
                make = partial(llamacpp.driver, address, messages=messages, length=length)
                targets.append(Target(PEER, [peer.pid], make))
        rows: list[dict[str, Any]] = []
        for target in targets:  # one whole unmeasured request each
            await target.warm(args.max_tokens)
        for round_ in range(1, args.rounds + 1):
            for c in args.concurrency:
                for target in targets:
                    rows.append({**await target.level(c, args), "round": round_})
                    say(describe(rows[-1]))
                    await target.warm(1)  # it has dropped the level's cancelled requests
    finally:
        for close in closers:
            await close()
        if peer is not None:
            peer.stop()
    return {
        "schema": "maas-bench-generation/1",
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": _machine(),
        "config": {
            "model": args.model,
            "concurrency": args.concurrency,
            "seconds": args.seconds,
            "warmup": args.warmup,
            "max_tokens": args.max_tokens,
            "rounds": args.rounds,
            "prompts": len(PROMPTS),
        },
        "levels": rows,
        "ratios": ratios(rows, args.concurrency),
        "notes": notes,
    }


def _gguf() -> Path:
    from tools.demo.smollm2 import gguf_file

    return gguf_file()


def _machine() -> dict[str, Any]:
    from tools.bench.run import machine

    return machine()


def ratios(rows: list[dict[str, Any]], levels: list[int]) -> list[dict[str, Any]]:
    """Served / in-process at each level, and each target's top level / 1 stream."""
    # The mean over rounds of each target at each level.
    sums: dict[tuple[str, int], list[float]] = {}
    for r in rows:
        sums.setdefault((r["label"], r["concurrency"]), []).append(r["tokens_per_second"])
    by = {key: sum(v) / len(v) for key, v in sums.items()}
    out = []
    served, engine = SERVED, ENGINE
    for c in levels:
        a, b = by.get((served, c)), by.get((engine, c))
        if a is not None and b:
            out.append(
                {
                    "name": f"served / in-process, {c} streams",
                    "value": round(a / b, 3),
                    "goal": ">= 0.8",
                }
            )
    for c in levels:  # where the gap is: inference's stream path, or the gateway's hop
        a, b = by.get((DIRECT, c)), by.get((engine, c))
        if a is not None and b:
            out.append(
                {"name": f"direct / in-process, {c} streams", "value": round(a / b, 3), "goal": "-"}
            )
    top = max(levels)
    for label in sorted({r["label"] for r in rows}):
        one, many = by.get((label, 1)), by.get((label, top))
        if one and many is not None and top != 1:
            goal = ">= 2 (2-core CPU)" if label in (served, engine) else "-"
            out.append(
                {
                    "name": f"{label}: {top} streams / 1 stream",
                    "value": round(many / one, 3),
                    "goal": goal,
                }
            )
    return out


def markdown(document: dict[str, Any]) -> str:
    """The levels and the ratios as Markdown tables."""
    lines = [
        "| target | streams | output tok/s | TTFT p50 ms | TTFT p99 ms | TPOT p50 ms "
        "| TPOT p99 ms | requests done | tok/request | errors | client cores | server cores |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in document["levels"]:
        label = r["label"] + (f" (round {r['round']})" if r.get("round", 1) > 1 else "")
        lines.append(
            f"| {label} | {r['concurrency']} | {r['tokens_per_second']:.1f} | "
            f"{r['ttft_ms']['p50']:.0f} | {r['ttft_ms']['p99']:.0f} | {r['tpot_ms']['p50']:.1f} | "
            f"{r['tpot_ms']['p99']:.1f} | {r['requests_done']} | {r['tokens_per_request']} | "
            f"{r['errors']} | {r.get('client_cpu', '-')} | {r.get('server_cpu', '-')} |"
        )
    lines += ["", "| ratio (means over rounds) | value | goal |", "|---|---:|---|"]
    lines += [f"| {x['name']} | {x['value']} | {x['goal']} |" for x in document["ratios"]]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Build the model, serve it, measure, write bench/results/<name>-generation.json."""
    from tools.bench.textservers import demo_model, serve, write_results

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.model_dir = args.prebuilt or demo_model(MODEL, args.models_dir)
    with ExitStack() as stack:
        served = serve({args.model: args.model_dir}, stack, args.gateway)
        args.pids = served.pids
        args.direct, args.direct_pid = served.inference, served.inference_pid
        document = asyncio.run(bench(args, served.gateway, print))
    print(markdown(document))
    write_results(document, args.out, args.name, "generation")
    return 0
