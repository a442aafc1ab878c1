"""The floor of a Python gRPC server: `python -m tools.bench.server_floor` (make
bench-server-floor).

The server CPU per unary call of grpc.aio, grpclib, pyvoy (Envoy, the Python app in
Envoy's process) and hypercorn (h2c), each answering a fixed 64-byte reply with no
handler work (tools/bench/server_floor_app.py, run from the `.bench/floor` venv that
`tools/bench/venvs.sh floor` builds). This process drives each with a grpc.aio client on
uvloop, 200-byte requests, at c=1 and c=16 after WARMUP_CALLS calls, and reads the CPU
seconds of the server's whole process tree (psutil) around each load. Each round starts
every server once, in an order rotated per round, so the medians see the same machine.
granian is absent: it cannot send HTTP/2 trailers, so it cannot serve gRPC.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shlex
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc
import psutil  # type: ignore[import-untyped]  # no stubs in the dev extras
import uvloop

from tools.bench.cpu import live_cpu_seconds
from tools.bench.server_floor_app import PATH, PAYLOAD
from tools.bench.servers import ROOT, Process

APP = "tools.bench.server_floor_app"
REFERENCE = "grpc.aio"
REQUEST = bytes(200)
WARMUP_CALLS = 500
LOAD_CAP_S = 120.0
POLL_S = 0.05
PORT_TRIES = 600  # 30 s of polls for the listening line
CALL_TRIES = 100  # calls of 1 s at most until the server answers one
LISTENING = re.compile(r"(?:listening on |Running on http://)127\.0\.0\.1:(\d+)")


@dataclass(frozen=True)
class Server:
    """A server to measure: the floor venv's packages it needs, its command line."""

    name: str
    needs: tuple[str, ...]
    command: tuple[str, ...]


@dataclass(frozen=True)
class Figures:
    """One load: calls made and failed, and per call the CPU of server and client."""

    calls: int
    errors: int
    calls_per_s: float
    server_cpu_us: float
    client_cpu_us: float


@dataclass(frozen=True)
class Row:
    """The medians over rounds of one server at one concurrency (errors: the sum)."""

    server: str
    c: int
    rounds: int
    calls_per_s: float
    server_cpu_us: float
    client_cpu_us: float
    errors: int
    ratio: float | None  # server CPU over REFERENCE's at the same c


def servers(venv: Path) -> list[Server]:
    """The four servers, each on 127.0.0.1 port 0, started by the floor venv's Python."""
    python, asgi = str(venv / "bin" / "python"), f"{APP}:app"
    pyvoy = [str(venv / "bin" / "pyvoy"), "--address", "127.0.0.1", "--port", "0"]
    pyvoy += ["--worker-threads", "1", "--loop", "uvloop", asgi]
    hypercorn = [python, "-m", "hypercorn", "--config", f"python:{APP}.HypercornConfig"]
    hypercorn += ["--bind", "127.0.0.1:0", "--worker-class", "uvloop", "--workers", "1", asgi]
    return [
        Server("grpc.aio", ("grpcio", "uvloop"), (python, "-m", APP, "grpcaio")),
        Server("grpclib", ("grpclib", "uvloop"), (python, "-m", APP, "grpclib")),
        Server("pyvoy", ("pyvoy", "uvloop"), tuple(pyvoy)),
        Server("hypercorn", ("hypercorn", "uvloop"), tuple(hypercorn)),
    ]


def median_row(server: str, c: int, runs: list[Figures], reference: float | None) -> Row:
    """The medians of `runs`, and the server CPU as a ratio of `reference`'s."""
    cpu = statistics.median(r.server_cpu_us for r in runs)
    return Row(
        server=server,
        c=c,
        rounds=len(runs),
        calls_per_s=statistics.median(r.calls_per_s for r in runs),
        server_cpu_us=cpu,
        client_cpu_us=statistics.median(r.client_cpu_us for r in runs),
        errors=sum(r.errors for r in runs),
        ratio=cpu / reference if reference else None,
    )


def summarize(runs: dict[str, dict[int, list[Figures]]]) -> list[Row]:
    """One Row per concurrency and server, in that order."""
    levels = sorted({c for by in runs.values() for c in by})
    rows = []
    for c in levels:
        ref = runs.get(REFERENCE, {}).get(c)
        reference = statistics.median(r.server_cpu_us for r in ref) if ref else None
        rows += [median_row(s, c, by[c], reference) for s, by in runs.items() if by.get(c)]
    return rows


def table(rows: list[Row]) -> list[str]:
    """The markdown table of `rows`."""
    lines = [
        "| server | c | calls/s | server CPU µs/call | client CPU µs/call | errors "
        f"| server CPU / {REFERENCE} |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = "–" if r.ratio is None else f"{r.ratio:.2f}"
        lines.append(
            f"| {r.server} | {r.c} | {r.calls_per_s:.0f} | {r.server_cpu_us:.0f} "
            f"| {r.client_cpu_us:.0f} | {r.errors} | {ratio} |"
        )
    return lines


async def run_calls(
    call: Any,
    concurrency: int,
    calls: int,
    request: bytes = REQUEST,
    expect: bytes | None = PAYLOAD,
) -> tuple[int, int]:
    """`calls` calls from `concurrency` callers, LOAD_CAP_S at most: (made, failed). A
    call fails on an error status, or with `expect` on a reply that is not it."""
    left, made, failed = calls, 0, 0
    deadline = time.monotonic() + LOAD_CAP_S

    async def caller() -> None:
        nonlocal left, made, failed
        while left > 0 and time.monotonic() < deadline:
            left -= 1
            made += 1
            try:
                reply = await call(request, timeout=10)
            except grpc.aio.AioRpcError:
                failed += 1
                continue
            if expect is not None and reply != expect:
                failed += 1

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return made, failed


async def load(
    call: Any,
    pid: int,
    concurrency: int,
    calls: int,
    request: bytes = REQUEST,
    expect: bytes | None = PAYLOAD,
) -> Figures:
    """A warm-up, then `calls` calls measured: rate and CPU µs per call of both sides."""
    await run_calls(call, concurrency, WARMUP_CALLS, request, expect)
    server, client, began = live_cpu_seconds(pid), time.process_time(), time.perf_counter()
    made, failed = await run_calls(call, concurrency, calls, request, expect)
    elapsed = time.perf_counter() - began
    client, server = time.process_time() - client, live_cpu_seconds(pid) - server
    per_call = 1e6 / max(made, 1)
    return Figures(made, failed, made / elapsed, server * per_call, client * per_call)


async def wait_for_port(server: Process) -> int:
    """The port from the server's `listening on` (or hypercorn's `Running on`) line."""
    for _ in range(PORT_TRIES):
        match = LISTENING.search(server.log_path.read_text(errors="replace"))
        if match:
            return int(match.group(1))
        server.check_alive()
        await asyncio.sleep(POLL_S)
    raise TimeoutError(f"{server.name} printed no port:\n{server.logs()}")


async def wait_until_answers(call: Any, server: Process) -> None:
    """Call until one call is answered with PAYLOAD; RuntimeError on a wrong reply."""
    for _ in range(CALL_TRIES):
        server.check_alive()
        try:
            reply = await call(REQUEST, timeout=1)
        except grpc.aio.AioRpcError:
            await asyncio.sleep(POLL_S)
            continue
        if reply != PAYLOAD:
            raise RuntimeError(f"{server.name} answered {reply!r}")
        return
    raise TimeoutError(f"{server.name} answered no call:\n{server.logs()}")


def stop(server: Process) -> None:
    """Stop the server, then kill whatever of its tree outlived it (Envoy, workers)."""
    try:
        tree = psutil.Process(server.pid).children(recursive=True)
    except psutil.Error:
        tree = []
    server.stop()
    for child in tree:
        try:
            child.kill()
        except psutil.Error:
            continue


async def one_round(server: Server, loads: list[tuple[int, int]]) -> dict[int, Figures]:
    """Start `server`, run each load of `loads` against it, stop it."""
    env = {"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    process = Process(f"floor-{server.name}", server.command, env)
    try:
        port = await wait_for_port(process)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary(PATH)
            await wait_until_answers(call, process)
            return {c: await load(call, process.pid, c, n) for c, n in loads}
    finally:
        stop(process)


async def measure(
    chosen: list[Server], loads: list[tuple[int, int]], rounds: int
) -> tuple[dict[str, dict[int, list[Figures]]], dict[str, str]]:
    """Every server over `rounds`: the figures of each load, and the servers that failed."""
    runs: dict[str, dict[int, list[Figures]]] = {s.name: {} for s in chosen}
    failed: dict[str, str] = {}
    for index in range(rounds):
        shift = index % len(chosen)
        for server in chosen[shift:] + chosen[:shift]:
            if server.name in failed:
                continue
            try:
                figures = await one_round(server, loads if index % 2 == 0 else loads[::-1])
            except (RuntimeError, TimeoutError) as exc:
                failed[server.name] = str(exc)
                print(f"{server.name} failed: {exc}")
                continue
            for c, f in figures.items():
                runs[server.name].setdefault(c, []).append(f)
                print(
                    f"round {index} {server.name} c={c}: {f.calls_per_s:.0f}/s, "
                    f"server {f.server_cpu_us:.0f} µs/call, {f.errors} errors"
                )
    return {name: by for name, by in runs.items() if by}, failed


def available(venv: Path) -> tuple[list[Server], dict[str, str]]:
    """The servers whose packages the floor venv has, and its package versions."""
    python = venv / "bin" / "python"
    if not python.exists():
        return [], {}
    command = [str(python), "-m", APP, "versions"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    done.check_returncode()
    versions: dict[str, str] = json.loads(done.stdout)
    chosen = []
    for server in servers(venv):
        missing = [p for p in server.needs if p not in versions]
        if missing:
            print(f"skipping {server.name}: {', '.join(missing)} not installed in {venv}")
        else:
            chosen.append(server)
    return chosen, versions


def parser(description: str, out: str) -> argparse.ArgumentParser:
    """The flags of this bench and of tools/bench/front_cost.py: rounds, calls, output."""
    flags = argparse.ArgumentParser(description=description)
    flags.add_argument("--rounds", type=int, default=3)
    flags.add_argument("--calls-c1", type=int, default=3000)
    flags.add_argument("--calls-c16", type=int, default=16000)
    flags.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / out)
    return flags


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0], "server-floor.json").parse_args(argv)
    venv = ROOT / ".bench" / "floor"
    chosen, versions = available(venv)
    if not chosen:
        print(f"nothing to measure in {venv}: build it with `bash tools/bench/venvs.sh floor`")
        return 2
    loads = [(1, args.calls_c1), (16, args.calls_c16)]
    runs, failed = uvloop.run(measure(chosen, loads, args.rounds))
    rows = summarize(runs)
    document = {
        "cpus": os.cpu_count(),
        "versions": versions,
        "commands": {s.name: shlex.join(s.command) for s in chosen},
        "request_bytes": len(REQUEST),
        "reply_bytes": len(PAYLOAD),
        "warmup_calls": WARMUP_CALLS,
        "loads": dict(loads),
        "rounds": args.rounds,
        "failed": failed,
        "runs": {s: {c: [asdict(f) for f in fs] for c, fs in by.items()} for s, by in runs.items()},
        "summary": [asdict(r) for r in rows],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print("\n".join(table(rows)))
    print(f"wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
