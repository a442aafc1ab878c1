"""One loaded model version: its sessions, signature, scheduler and counters."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from services.common.errors import InvalidArgument
from services.inference.config import ModelConfig
from services.inference.runtime import (
    Signature,
    create_session,
    signature_of,
    zeros_for,
)
from services.inference.scheduler import Runner, Scheduler, Tensors
from services.inference.stats import ModelStats

_log = logging.getLogger(__name__)


def make_runner(session: ort.InferenceSession, signature: Signature) -> Runner:
    """A blocking callable that runs the session and returns every output by name."""
    output_names = [o.name for o in signature.outputs]

    def run(inputs: Tensors) -> Tensors:
        return dict(zip(output_names, session.run(output_names, inputs), strict=True))

    return run


@dataclass(frozen=True)
class Sessions:
    """What loading a model file produces, before any event loop is involved."""

    runners: list[Runner]
    signature: Signature
    provider: str


def open_sessions(path: Path, config: ModelConfig) -> Sessions:
    """Create `config.instances` sessions and warm each up; blocking, raises LoadError."""
    sessions = [create_session(path, config) for _ in range(config.instances)]
    signature = signature_of(sessions[0])
    runners = [make_runner(s, signature) for s in sessions]
    warmup = {spec.name: zeros_for(spec) for spec in signature.inputs}
    for run in runners:
        run(warmup)
    provider = sessions[0].get_providers()[0]
    return Sessions(runners, signature, provider)


@dataclass(eq=False)
class LoadedModel:
    """A READY model version that takes requests."""

    name: str
    version: int
    path: Path
    config: ModelConfig
    signature: Signature
    provider: str
    scheduler: Scheduler
    stats: ModelStats = field(default_factory=ModelStats)
    inflight: int = 0

    @classmethod
    def start(
        cls, name: str, version: int, path: Path, config: ModelConfig, sessions: Sessions
    ) -> LoadedModel:
        """Wrap opened sessions with a scheduler; must run on the event loop."""
        stats = ModelStats()
        scheduler = Scheduler(
            sessions.runners,
            batching=config.dynamic_batching,
            batchable=sessions.signature.batchable,
            stats=stats,
        )
        _log.info(
            "model %s version %s ready on %s",
            name,
            version,
            sessions.provider,
            extra={"model": name, "version": version, "provider": sessions.provider},
        )
        return cls(
            name, version, path, config, sessions.signature, sessions.provider, scheduler, stats
        )

    @property
    def max_batch_size(self) -> int:
        """What ModelConfig reports: 0 when the model has no dynamic batch dimension."""
        return self.config.dynamic_batching.max_batch_size if self.signature.batchable else 0

    async def infer(self, inputs: Tensors, deadline: float | None) -> tuple[Tensors, int]:
        """Queue one request and wait for its outputs and queue time."""
        self.inflight += 1
        try:
            return await self.scheduler.submit(inputs, deadline)
        finally:
            self.inflight -= 1

    async def close(self) -> None:
        """Finish queued and running requests, then release the sessions."""
        await self.scheduler.close()


def as_ort_strings(name: str, array: np.ndarray) -> np.ndarray:
    """BYTES elements as str, which ONNX Runtime string tensors need (UTF-8 only)."""
    out = np.empty(array.shape, dtype=object)
    flat_in, flat_out = array.ravel(), out.ravel()
    for i, item in enumerate(flat_in):
        if isinstance(item, str):
            flat_out[i] = item
            continue
        try:
            flat_out[i] = bytes(item).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidArgument(
                f"input '{name}': BYTES element {i} is not UTF-8, which ONNX Runtime "
                "string tensors need"
            ) from None
    return out
