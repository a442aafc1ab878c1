"""The generate engine called in-process, the limit a served model is measured against.

    python -m services.inference.tasks.generate.bench --model-dir D --streams 1,4,16

For each level, that many streams each run `--requests` greedy requests back to back,
every prompt a different story topic, at most `--max-tokens` each; the output tokens
actually made are counted (a request may end early at EOS). Prints output tokens/s,
TTFT p50/p99 and the mean time per output token, one line per level, or with --json
one JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from services.inference.config import GenerateConfig, ModelConfig
from services.inference.tasks.generate.chat import TextStream
from services.inference.tasks.generate.engine import Job
from services.inference.tasks.generate.model import GenerateModel
from services.inference.tasks.generate.sampling import SamplingParams

TOPICS = (
    "the sea", "a mountain", "the city at night", "an old library", "a garden in spring",
    "a train journey", "the desert", "a thunderstorm", "a quiet village", "the moon",
    "a busy market", "a forest path", "the first snow", "a lighthouse", "a river", "a bakery",
)  # fmt: skip
PROMPT = "<|im_start|>user\nWrite a long story about {}.<|im_end|>\n<|im_start|>assistant\n"


@dataclass(frozen=True)
class Level:
    """One concurrency level's figures."""

    streams: int
    requests: int
    output_tokens: int
    seconds: float
    tokens_per_second: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    tpot_ms: float


async def _one(model: GenerateModel, prompt: str, max_tokens: int) -> tuple[float, float, int]:
    """TTFT, mean time per output token after the first, and output tokens of one request."""
    tokens = model.tokenizer.encode(prompt, add_special_tokens=False).ids
    job = Job(tokens, SamplingParams(max_tokens), TextStream(model.tokenizer), None)
    started = time.perf_counter()
    first = last = 0.0
    count = 0
    async for chunk in model.chunks(job):
        last = time.perf_counter()
        first = first or last
        count = chunk.tokens
    tpot = (last - first) / (count - 1) if count > 1 else 0.0
    return first - started, tpot, count


async def run_level(model: GenerateModel, streams: int, requests: int, max_tokens: int) -> Level:
    """`streams` concurrent loops of `requests` requests each."""
    results: list[tuple[float, float, int]] = []

    async def loop(index: int) -> None:
        for i in range(requests):
            topic = TOPICS[(index + i * streams) % len(TOPICS)]
            results.append(await _one(model, PROMPT.format(topic), max_tokens))

    started = time.perf_counter()
    await asyncio.gather(*(loop(i) for i in range(streams)))
    seconds = time.perf_counter() - started
    ttft = np.array([r[0] for r in results]) * 1e3
    tpot = [r[1] * 1e3 for r in results if r[2] > 1]
    tokens = sum(r[2] for r in results)
    return Level(
        streams,
        len(results),
        tokens,
        round(seconds, 3),
        round(tokens / seconds, 1),
        round(float(np.percentile(ttft, 50)), 1),
        round(float(np.percentile(ttft, 99)), 1),
        round(float(np.mean(tpot)) if tpot else 0.0, 2),
    )


async def bench(
    model_dir: Path, levels: Sequence[int], requests: int, max_tokens: int
) -> list[Level]:
    """Load the model once (slots for the highest level) and run every level."""
    settings = GenerateConfig(max_sequences=max(levels), max_context=1024)
    model = GenerateModel(model_dir, ModelConfig(task="generate", warmup=[], generate=settings))
    model.start()
    try:
        await run_level(model, 1, 1, 8)  # warm-up
        return [await run_level(model, n, requests, max_tokens) for n in levels]
    finally:
        await model.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="generate-bench", description=__doc__)
    parser.add_argument("--model-dir", required=True, type=Path, help="a generate version dir")
    parser.add_argument("--streams", default="1,4,16", help="concurrency levels, comma-separated")
    parser.add_argument("--requests", type=int, default=2, help="requests per stream")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    levels = [int(n) for n in args.streams.split(",") if n]
    results = asyncio.run(bench(args.model_dir, levels, args.requests, args.max_tokens))
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=1))  # noqa: T201 - the output
        return
    for r in results:
        print(  # noqa: T201 - the output
            f"streams {r.streams:3d}: {r.tokens_per_second:7.1f} output tokens/s "
            f"({r.output_tokens} tokens, {r.requests} requests, {r.seconds:.1f} s), "
            f"TTFT p50 {r.ttft_p50_ms:.0f} ms p99 {r.ttft_p99_ms:.0f} ms, "
            f"time per output token {r.tpot_ms:.1f} ms"
        )


if __name__ == "__main__":
    main()
