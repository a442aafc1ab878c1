"""The generation peer: llama.cpp's server (`python -m llama_cpp.server` from
llama-cpp-python, built from source in .bench/llamacpp) on the same GGUF file,
streamed over its OpenAI chat route with server-sent events."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from tools.bench.servers import ROOT, Process, free_port
from tools.chat import Piece

VENV = ROOT / ".bench" / "llamacpp"


def start(gguf: Path, timeout: float = 180) -> tuple[Process | None, str]:
    """The server on a free port, ready; or None and why not."""
    python = VENV / "bin" / "python"
    if not python.exists():
        return None, f"{python} is absent (pip install 'llama-cpp-python[server]' there)"
    port = free_port()
    command = [
        str(python),
        "-m",
        "llama_cpp.server",
        "--model",
        str(gguf),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_threads",
        str(os.cpu_count() or 1),
        "--n_ctx",
        "2048",
        # Batches of more than one token crash (SIGSEGV in llama_decode) in this build
        # (0.3.36, native flags on this AVX-512/AMX CPU): prompts go in a token at a time.
        "--n_batch",
        "1",
        "--n_ubatch",
        "1",
        # By default a new request interrupts the one running; queue them instead (the
        # server runs one generation at a time).
        "--interrupt_requests",
        "False",
    ]
    server = Process("llamacpp", command)
    server.http_address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return None, f"it exited with {server.process.returncode}: {server.logs()[-300:]}"
        try:
            with urllib.request.urlopen(f"http://{server.http_address}/v1/models", timeout=2):
                return server, ""
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    server.stop()
    return None, f"not ready in {timeout:.0f} s"


def driver(
    address: str,
    max_tokens: int,
    messages: Callable[[int], list[dict[str, str]]],
    length: Callable[[int, int], int] = lambda index, n: n,
) -> Callable[[int], AsyncIterator[Piece]]:
    """Streamed chat completions, greedy, one SSE chunk per token."""
    import aiohttp

    async def drive(index: int) -> AsyncIterator[Piece]:
        body: dict[str, Any] = {
            "messages": messages(index),
            "max_tokens": length(index, max_tokens),
            "temperature": 0.0,
            "stream": True,
        }
        timeout = aiohttp.ClientTimeout(total=600)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(f"http://{address}/v1/chat/completions", json=body) as response,
        ):
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}: {(await response.text())[:200]}")
            async for raw in response.content:
                line = raw.decode().strip()
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    yield Piece("", True)
                    return
                choices = json.loads(data).get("choices") or [{}]
                text = (choices[0].get("delta") or {}).get("content") or ""
                if text:
                    yield Piece(text, False)
            yield Piece("", True)

    return drive
