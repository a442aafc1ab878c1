"""The generate engine in a process of its own, for `maas bench generation`.

The in-process limit runs here rather than in the bench's process, which also holds
the served targets' grpc.aio channels: there the engine made 49 tokens/s at one
stream, against 94 in a process of its own minutes later (the machine is noisy, and
later pairs differed less, so the cause is not proven; a process of its own, like a
served replica's, takes the question away).
The bench sends one JSON command per line on stdin and reads one JSON line back:

    {"op": "warm", "max_tokens": 64}                      -> {"ok": true}
    {"op": "level", "concurrency": 4, "seconds": 10, "warmup": 3, "max_tokens": 64}
                                                           -> the level's figures
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any


async def serve(model_dir: Path) -> None:
    """Answer commands until stdin closes, then close the engine."""
    from tools.bench.gen_requests import engine_driver, open_engine, warm
    from tools.bench.textload import measure

    backend = open_engine(model_dir)
    backend.start()
    try:
        print(json.dumps({"ready": True}), flush=True)
        while line := await asyncio.to_thread(sys.stdin.readline):
            command: dict[str, Any] = json.loads(line)
            driver = engine_driver(backend, int(command["max_tokens"]))
            if command["op"] == "warm":
                await warm(driver, "engine in-process")
                print(json.dumps({"ok": True}), flush=True)
                continue
            loop = asyncio.get_running_loop()
            cpu, started = _cpu(), loop.time()
            level = await measure(
                driver, int(command["concurrency"]), command["seconds"], command["warmup"]
            )
            row = asdict(level)
            row["server_cpu"] = round((_cpu() - cpu) / (loop.time() - started), 2)
            print(json.dumps(row), flush=True)
    finally:
        await backend.close()


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    asyncio.run(serve(Path(sys.argv[1])))


class EngineWorker:
    """The bench's side: the worker process and its command pipe."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, model_dir: Path, timeout: float = 300) -> EngineWorker:
        """The worker with its engine loaded and warm."""
        from tools.bench.servers import ROOT

        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tools.bench.engine_worker",
            str(model_dir.resolve()),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
        )
        worker = cls(process)
        await asyncio.wait_for(worker._answer(), timeout)
        return worker

    @property
    def pid(self) -> int:
        return int(self.process.pid)

    async def ask(self, **command: Any) -> dict[str, Any]:
        """Send one command and wait for its answer."""
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command).encode() + b"\n")
        await self.process.stdin.drain()
        return await self._answer()

    async def _answer(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            if line.startswith(b"{"):  # anything else is a library's own print
                answer: dict[str, Any] = json.loads(line)
                return answer
        raise RuntimeError(f"the engine worker exited with {await self.process.wait()}")

    async def close(self) -> None:
        """End of input: the worker closes its engine and exits."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 30)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
