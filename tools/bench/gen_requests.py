"""The generation bench's requests, and drivers that send them: over gRPC streams, or
into the engine in this process. Shared by the bench and its engine worker.

Every target gets the same greedy chat requests: a fixed list of prompts, and
max_tokens 0.75, 1 and 1.25 times the level's in turn.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from tools.bench.textload import Driver
from tools.chat import Piece, generate_inputs, generate_request, piece_from, stream_generate

PROMPTS = (
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Explain how a bicycle stays upright while it moves.",
    "Describe a busy market in the morning, with its sounds and smells.",
    "What are the main causes of the seasons on Earth? Explain in detail.",
    "Write a letter to a friend about a trip to the mountains.",
    "Give me a recipe for a simple vegetable soup, step by step.",
    "Explain what a computer's memory does, for a ten year old.",
    "Tell me about the history of the printing press.",
    "Write a poem about rain on a city street.",
    "How do bees make honey? Explain the whole process.",
    "Describe the life cycle of a butterfly.",
    "What should someone pack for a week of camping? Explain why.",
    "Write a dialogue between a cat and a dog about breakfast.",
    "Explain how a train timetable is planned.",
    "Tell a story about a robot who learns to paint.",
    "Why is the sky blue? Give a careful explanation.",
)


# max_tokens of request i is the level's times SPREAD[i % 3]: equal lengths would keep
# the streams in lockstep, all ending in one step and all prefilling together.
SPREAD = (0.75, 1.0, 1.25)


def length(index: int, max_tokens: int) -> int:
    """Request `index`'s max_tokens: spread around `max_tokens`, the same everywhere."""
    return max(1, round(max_tokens * SPREAD[index % len(SPREAD)]))


def sampling(index: int, max_tokens: int) -> dict[str, Any]:
    """Greedy, bounded: the same for every target."""
    return {"max_tokens": length(index, max_tokens), "temperature": 0.0}


def messages(index: int) -> list[dict[str, str]]:
    """The conversation of request `index`."""
    return [{"role": "user", "content": PROMPTS[index % len(PROMPTS)]}]


def served_driver(stub: Any, model: str, max_tokens: int) -> Driver:
    """Requests over ModelStreamInfer (through the gateway)."""

    def drive(index: int) -> AsyncIterator[Piece]:
        inputs = generate_inputs(messages=messages(index), sampling=sampling(index, max_tokens))
        return stream_generate(stub, generate_request(model, inputs), (), timeout=600)

    return drive


def engine_driver(backend: Any, max_tokens: int) -> Driver:
    """Requests straight into the engine's stream(), in this process: the limit."""
    from services.inference.tasks import RequestContext

    async def drive(index: int) -> AsyncIterator[Piece]:
        inputs = generate_inputs(messages=messages(index), sampling=sampling(index, max_tokens))
        parts = backend.stream(inputs, None, RequestContext())
        try:
            async for part in parts:
                yield piece_from(part.outputs, part.final)
        finally:
            await parts.aclose()

    return drive


def open_engine(model_dir: Path) -> Any:
    """The generate task model as the inference service opens it."""
    from services.inference.config import load_config
    from services.inference.tasks import open_task

    config = load_config(model_dir / "config.yaml")
    return open_task(model_dir / "1" / "model.onnx", config)


async def warm(driver: Driver, label: str) -> None:
    """One request to its end, so first-use costs stay out of the levels."""
    async for piece in driver(0):
        if piece.final:
            return
    raise RuntimeError(f"{label}: the warm-up request ended without a final response")
