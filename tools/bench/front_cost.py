"""What maas inference's hop costs behind another gRPC server: `python -m
tools.bench.front_cost` (make bench-front-cost).

The same model repository (digits, batching on, as the peers run serves it) is served
twice: by services.inference.main as it ships (grpc.aio), and by the prototype in
tools/bench/pyvoy_front.py, which runs the same ModelInfer code behind pyvoy (Envoy),
started from `.bench/floor`'s pyvoy (tools/bench/venvs.sh floor) with this
repository's .venv on PYTHONPATH. One grpc.aio client drives both with the peers run's
digits request at c=1 and c=16, the servers interleaved round by round as
tools/bench/server_floor.py does, and reads the CPU of each server's process tree.
"""

from __future__ import annotations

import asyncio
import json
import os
import sysconfig
import tempfile
from dataclasses import asdict
from pathlib import Path

import grpc
import uvloop

from tools.bench import models
from tools.bench.server_floor import (
    REFERENCE,
    Figures,
    load,
    parser,
    stop,
    summarize,
    table,
    wait_for_port,
)
from tools.bench.servers import (
    ROOT,
    Process,
    batching_config,
    model_repository,
    start_inference_at,
)

PATH = "/inference.GRPCInferenceService/ModelInfer"
FLOOR = ROOT / ".bench" / "floor"
TRIES = 600  # polls of 0.05 s for the first answer (the model loads first)


def pyvoy_command(repository: Path) -> tuple[list[str], dict[str, str]]:
    """The prototype's command line and environment, on 127.0.0.1 port 0."""
    site = sysconfig.get_paths()["purelib"]
    path = os.pathsep.join([str(ROOT), str(ROOT / "services" / "_proto"), site])
    pyvoy = [str(FLOOR / "bin" / "pyvoy"), "--address", "127.0.0.1", "--port", "0"]
    pyvoy += ["--worker-threads", "1", "--loop", "uvloop", "tools.bench.pyvoy_front:app"]
    return pyvoy, {"REPO": str(repository), "PYTHONPATH": path}


async def started(name: str, repository: Path) -> tuple[Process, int]:
    """One of the two servers, and its port once it listens."""
    if name == REFERENCE:  # maas inference as it ships
        port_file = repository / "port"
        port_file.unlink(missing_ok=True)  # the last round's server wrote it
        server = start_inference_at(repository, port_file)
        return server, int(server.address.rsplit(":", 1)[1])
    command, env = pyvoy_command(repository)
    server = Process(f"front-{name}", command, env)
    return server, await wait_for_port(server)


async def first_answer(call: grpc.aio.UnaryUnaryMultiCallable, request: bytes) -> bytes:
    """Call until the model answers (it loads after the port is up): the reply."""
    for _ in range(TRIES):
        try:
            reply: bytes = await call(request, timeout=1)
            return reply
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.05)
    raise TimeoutError("the model did not answer")


async def one_round(
    name: str, repository: Path, request: bytes, loads: list[tuple[int, int]], replies: set[bytes]
) -> dict[int, Figures]:
    """Start one server, run each load of `loads` against it, stop it; its first reply
    goes in `replies`, so that both servers can be seen to answer alike."""
    process, port = await started(name, repository)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary(PATH)
            replies.add(await first_answer(call, request))
            return {c: await load(call, process.pid, c, n, request, None) for c, n in loads}
    finally:
        stop(process)


async def measure(
    repository: Path, request: bytes, loads: list[tuple[int, int]], rounds: int, replies: set[bytes]
) -> dict[str, dict[int, list[Figures]]]:
    """Both servers over `rounds`, their order and the loads' order turned each round."""
    names = [REFERENCE, "pyvoy"]
    runs: dict[str, dict[int, list[Figures]]] = {name: {} for name in names}
    for index in range(rounds):
        for name in names[index % 2 :] + names[: index % 2]:
            order = loads if index % 2 == 0 else loads[::-1]
            for c, figures in (await one_round(name, repository, request, order, replies)).items():
                runs[name].setdefault(c, []).append(figures)
                print(
                    f"round {index} {name} c={c}: {figures.calls_per_s:.0f}/s, server "
                    f"{figures.server_cpu_us:.0f} µs/call, {figures.errors} errors"
                )
    return runs


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0], "front-cost.json").parse_args(argv)
    if not (FLOOR / "bin" / "pyvoy").exists():
        print(f"no pyvoy in {FLOOR}: build it with `bash tools/bench/venvs.sh floor`")
        return 2
    model = models.load("digits")
    repository = Path(tempfile.mkdtemp(prefix="maas-front-repo-"))
    model_repository(model.name, model.path, batching_config(True), repository)
    request = models.payloads(model, model.name, count=1)[0]
    loads = [(1, args.calls_c1), (16, args.calls_c16)]
    replies: set[bytes] = set()
    runs = uvloop.run(measure(repository, request, loads, args.rounds, replies))
    rows = summarize(runs)
    document = {
        "model": model.name,
        "request_bytes": len(request),
        "loads": dict(loads),
        "rounds": args.rounds,
        "runs": {s: {c: [asdict(f) for f in fs] for c, fs in by.items()} for s, by in runs.items()},
        "summary": [asdict(r) for r in rows],
        "same_reply": len(replies) == 1,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print("\n".join(table(rows)))
    print(f"wrote {args.out}")
    if len(replies) != 1:
        print(f"the servers answered the same request {len(replies)} different ways")
        return 1
    return 1 if any(r.errors for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
