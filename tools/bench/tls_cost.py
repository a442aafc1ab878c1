"""The cost of TLS at the gateway: `python -m tools.bench.tls_cost [--seconds 5]`.

One inference service (plaintext, on loopback) behind two gateways started alike,
one plaintext and one serving TLS from a local CA's certificate (tools/certs). The
same closed-loop clients (gRPC ModelInfer of the bench's digits model, N calls in
flight on one channel) drive each in turn, interleaved by concurrency level and
repeated over rounds, so the plaintext/TLS ratio of each level sees the same load.

`--perf-analyzer` also drives both gateways with Triton's perf_analyzer
(`tools/bench/venvs.sh perf`), the TLS one with `--ssl-grpc-use-ssl` and the CA
as its root certificates: the independent check that a stock Triton client
works against the TLS gateway, with its own figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
from pathlib import Path

import grpc

from tools.bench import models, perf_analyzer
from tools.bench.closed_loop import closed_loop
from tools.bench.servers import ROOT, batching_config, start_gateway, start_inference
from tools.certs import issue, make_ca


async def measure(
    plain: str,
    tls: str,
    ca: bytes,
    payloads: tuple[bytes, ...],
    levels: list[int],
    args: argparse.Namespace,
) -> dict[str, dict[str, list[dict[str, float]]]]:
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    credentials = grpc.ssl_channel_credentials(root_certificates=ca)
    async with (
        grpc.aio.insecure_channel(plain) as plain_channel,
        grpc.aio.secure_channel(tls, credentials) as tls_channel,
    ):
        for _ in range(args.rounds):
            for level in levels:
                for label, channel in (("plaintext", plain_channel), ("tls", tls_channel)):
                    figures = await closed_loop(channel, payloads, level, args.seconds)
                    results.setdefault(str(level), {}).setdefault(label, []).append(figures)
    return results


def perf_levels(
    plain: str, tls: str, ca: Path, model: str, levels: list[int]
) -> dict[str, dict[str, dict[str, float]]]:
    """perf_analyzer's req/s and p50 per level, plaintext and TLS; raises if it fails."""
    results: dict[str, dict[str, dict[str, float]]] = {}
    for level in levels:
        for label, address, root in (("plaintext", plain, None), ("tls", tls, ca)):
            measured, why = perf_analyzer.measure(address, model, level, root_ca=root)
            if measured is None:
                raise RuntimeError(f"perf_analyzer against the {label} gateway: {why}")
            figures = {"rps": measured.throughput, "p50_ms": measured.latency_ms["p50"]}
            results.setdefault(str(level), {})[label] = figures
    return results


def table(results: dict[str, dict[str, list[dict[str, float]]]]) -> list[str]:
    """The markdown rows: per level, the means over rounds and the TLS/plaintext ratio."""
    rows = [
        "| concurrency | plaintext req/s | TLS req/s | TLS/plaintext "
        "| plaintext p50 ms | TLS p50 ms |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for level, by in results.items():
        mean = {
            k: {f: statistics.mean(r[f] for r in runs) for f in ("rps", "p50_ms")}
            for k, runs in by.items()
        }
        p, t = mean["plaintext"], mean["tls"]
        rows.append(
            f"| {level} | {p['rps']:.0f} | {t['rps']:.0f} | {t['rps'] / p['rps']:.2f} | "
            f"{p['p50_ms']:.2f} | {t['p50_ms']:.2f} |"
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "tls_cost.json"))
    parser.add_argument(
        "--perf-analyzer",
        action="store_true",
        help="also measure with Triton's perf_analyzer (tools/bench/venvs.sh perf)",
    )
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]
    model = models.load("digits")
    payloads = models.payloads(model, served_as=model.name)
    work = Path(tempfile.mkdtemp(prefix="maas-bench-tls-"))
    ca = make_ca(work / "ca")
    cert = issue(ca, work / "certs", "gateway")
    inference = start_inference(model.name, model.path, batching_config(True))
    servers = [inference]
    try:
        plain = start_gateway([inference.address])
        servers.append(plain)
        tls_args = ["--tls-cert", str(cert.cert), "--tls-key", str(cert.key)]
        tls = start_gateway([inference.address], extra=tls_args)
        servers.append(tls)
        tls_address = tls.address.replace("127.0.0.1", "localhost")
        results = asyncio.run(
            measure(plain.address, tls_address, ca.cert.read_bytes(), payloads, levels, args)
        )
        perf = (
            perf_levels(plain.address, tls_address, ca.cert, model.name, levels)
            if args.perf_analyzer
            else None
        )
    finally:
        for server in reversed(servers):
            server.stop()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"ours": results, "perf_analyzer": perf}, indent=2) + "\n")
    print("closed-loop gRPC clients (ours):")
    print("\n".join(table(results)))
    if perf is not None:
        print("perf_analyzer:")
        print("\n".join(table({k: {m: [f] for m, f in v.items()} for k, v in perf.items()})))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
