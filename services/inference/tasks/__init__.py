"""Text models: a version's ONNX files plus its tokenizer, served behind v2 tensors.

A task model replaces the tensor scheduler of a plain model: it takes the decoded v2
inputs (BYTES text, BOOL flags, JSON parameters) and answers with v2 outputs, either
once (`submit`) or as a stream of responses (`stream`, for decoupled models).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from services.inference.config import ModelConfig
from services.inference.runtime import LoadError, Signature

Tensors = dict[str, np.ndarray]


@dataclass(frozen=True)
class RequestContext:
    """What a task needs of a request beyond its tensors."""

    # The gateway's id for the caller's API key ("" when none): usage is counted per key.
    key_id: str = ""
    # The request's v2 parameters (triton_enable_empty_final_response and the like).
    parameters: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class StreamPart:
    """One response of a decoupled model; `final` marks the request's last one."""

    outputs: Tensors
    final: bool


class TaskBackend(Protocol):
    """What the inference app needs of a task model."""

    signature: Signature
    provider: str
    # True when one request may yield many responses (ModelConfig reports it).
    decoupled: bool

    @property
    def depth(self) -> int:
        """Requests waiting to run."""
        ...

    def start(self) -> None:
        """Begin serving; called once on the event loop, after the blocking load."""

    async def submit(
        self, inputs: Tensors, deadline: float | None, context: RequestContext
    ) -> tuple[Tensors, int]:
        """One request's whole answer and its queue time in ns."""
        ...

    def stream(
        self, inputs: Tensors, deadline: float | None, context: RequestContext
    ) -> AsyncIterator[StreamPart]:
        """One request's responses as they are made; closing it cancels the request."""
        ...

    async def close(self) -> None:
        """Finish or cancel what runs, then release the sessions."""


# The tasks that read a tokenizer, and the modules of the `text` extra they need.
TEXT_TASKS = ("embedding", "generate")
TEXT_MODULES = ("tokenizers", "jinja2")


def open_task(path: Path, config: ModelConfig) -> TaskBackend:
    """Load a task model from its version directory; blocking, raises LoadError.

    `path` is the version's main file (model.onnx); the task reads its siblings."""
    if config.task not in TEXT_TASKS:
        raise LoadError(f"task '{config.task}' is not a text task")
    try:
        if config.task == "embedding":
            from services.inference.tasks.embedding import open_embedding

            return open_embedding(path.parent, config)
        from services.inference.tasks.generate.model import open_generate

        return open_generate(path.parent, config)
    except ModuleNotFoundError as exc:
        if exc.name not in TEXT_MODULES:
            raise
        # The slim image leaves the `text` extra out: that model is UNAVAILABLE, saying so.
        raise LoadError(
            f"task '{config.task}' needs the 'text' extra (pip install 'maas[text]'),"
            f" got no module '{exc.name}'"
        ) from exc
