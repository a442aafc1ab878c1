"""The gateway hop, unary against multiplexed: `python -m tools.bench.mux_cost [--seconds 5]`.

One inference service (digits, batching on) behind two gateways started alike but
for `--no-backend-mux` (one unary call per request to the backend) and
`--backend-mux` (calls multiplexed on maas.internal.v1 Forward streams). The same
closed-loop clients (gRPC ModelInfer, N calls in flight on one channel) drive each
in turn, interleaved by concurrency level and repeated over rounds, so the ratio
of each level sees the same load. Each run also reads the CPU seconds (user +
system, psutil) of the gateway's process and of the inference process, before and
after, for the CPU µs per request of each hop.

`--hop` first measures the backend hop alone: this process calls the inference
service directly, unary and through the gateway's own Multiplexer (2 connections),
and reports its own CPU µs per call (time.process_time) and calls/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

import grpc

from services.gateway.mux import Multiplexer
from tools.bench import models
from tools.bench.closed_loop import MODEL_INFER, closed_loop
from tools.bench.servers import ROOT, batching_config, start_gateway, start_inference

MODES = ("unary", "mux")


async def measure(
    addresses: dict[str, str],
    pids: dict[str, dict[str, int]],
    payloads: tuple[bytes, ...],
    levels: list[int],
    args: argparse.Namespace,
) -> dict[str, dict[str, list[dict[str, float]]]]:
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    channels = {mode: grpc.aio.insecure_channel(addresses[mode]) for mode in MODES}
    try:
        for _ in range(args.rounds):
            for level in levels:
                for mode in MODES:
                    figures = await closed_loop(
                        channels[mode], payloads, level, args.seconds, pids[mode]
                    )
                    results.setdefault(str(level), {}).setdefault(mode, []).append(figures)
    finally:
        for channel in channels.values():
            await channel.close()
    return results


async def hop_alone(
    address: str, payloads: tuple[bytes, ...], concurrency: int, calls: int, mode: str
) -> dict[str, float]:
    """This process's CPU µs per call and calls/s, calling `address` unary or multiplexed."""
    channel = grpc.aio.insecure_channel(address)
    unary = channel.unary_unary(MODEL_INFER)
    mux = Multiplexer(address, 2)

    async def one(payload: bytes) -> object:
        if mode == "unary":
            return await unary(payload, timeout=30)
        return await mux.call("ModelInfer", payload, 30, (), {})

    for payload in payloads[:8]:
        await one(payload)
    sent = 0

    async def caller() -> None:
        nonlocal sent
        while sent < calls:
            sent += 1
            await one(payloads[sent % len(payloads)])

    cpu, began = time.process_time(), time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    cpu, elapsed = time.process_time() - cpu, time.perf_counter() - began
    await mux.close()
    await channel.close()
    return {"client_cpu_us": cpu / sent * 1e6, "calls_per_s": sent / elapsed}


def hop_table(results: dict[str, dict[str, list[dict[str, float]]]]) -> list[str]:
    rows = [
        "| concurrency | hop | client CPU µs/call | calls/s |",
        "|---:|---|---:|---:|",
    ]
    for level, by in results.items():
        for mode, runs in by.items():
            cpu = statistics.mean(r["client_cpu_us"] for r in runs)
            rate = statistics.mean(r["calls_per_s"] for r in runs)
            rows.append(f"| {level} | {mode} | {cpu:.0f} | {rate:.0f} |")
    return rows


FIELDS = ("rps", "p50_ms", "gateway_cpu_us", "inference_cpu_us")


def table(results: dict[str, dict[str, list[dict[str, float]]]]) -> list[str]:
    """The markdown rows: per level and mode, the means over rounds, and mux/unary."""
    rows = [
        "| concurrency | forwarding | req/s | p50 ms | gateway CPU µs/req "
        "| inference CPU µs/req | req/s mux/unary | gateway CPU mux/unary |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for level, by in results.items():
        mean = {
            mode: {f: statistics.mean(r[f] for r in runs) for f in FIELDS}
            for mode, runs in by.items()
        }
        u, m = mean["unary"], mean["mux"]
        for mode, f in mean.items():
            ratios = (
                f"{m['rps'] / u['rps']:.2f} | {m['gateway_cpu_us'] / u['gateway_cpu_us']:.2f}"
                if mode == "mux"
                else " | "
            )
            rows.append(
                f"| {level} | {mode} | {f['rps']:.0f} | {f['p50_ms']:.2f} | "
                f"{f['gateway_cpu_us']:.0f} | {f['inference_cpu_us']:.0f} | {ratios} |"
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "mux_cost.json"))
    parser.add_argument("--hop", action="store_true", help="also the backend hop alone")
    parser.add_argument("--hop-calls", type=int, default=3000)
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]
    model = models.load("digits")
    payloads = models.payloads(model, served_as=model.name)
    inference = start_inference(model.name, model.path, batching_config(True))
    servers = [inference]
    hop: dict[str, dict[str, list[dict[str, float]]]] = {}
    try:
        for _ in range(args.rounds if args.hop else 0):
            for level in levels:
                for mode in MODES:
                    figures = asyncio.run(
                        hop_alone(inference.address, payloads, level, args.hop_calls, mode)
                    )
                    hop.setdefault(str(level), {}).setdefault(mode, []).append(figures)
        gateways = {}
        for mode in MODES:
            flag = "--backend-mux" if mode == "mux" else "--no-backend-mux"
            gateways[mode] = start_gateway([inference.address], extra=[flag])
            servers.append(gateways[mode])
        addresses = {mode: g.address for mode, g in gateways.items()}
        pids = {
            mode: {"gateway": g.pid, "inference": inference.pid} for mode, g in gateways.items()
        }
        results = asyncio.run(measure(addresses, pids, payloads, levels, args))
    finally:
        for server in reversed(servers):
            server.stop()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"gateway": results, "hop": hop}, indent=2) + "\n")
    if hop:
        print("the backend hop alone:")
        print("\n".join(hop_table(hop)))
    print("through the gateway:")
    print("\n".join(table(results)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
