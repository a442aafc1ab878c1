"""One loaded model version: its sessions, signature, scheduler and counters."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from services.common.errors import InvalidArgument
from services.common.telemetry import Tracing
from services.inference.binding import IoBindingRunner
from services.inference.config import ModelConfig
from services.inference.runtime import (
    CPU,
    LoadError,
    RunnerPlan,
    Signature,
    TensorSpec,
    create_session,
    runner_plan,
    signature_of,
    zeros_for,
)
from services.inference.scheduler import Runner, Scheduler, Tensors
from services.inference.stats import ModelStats
from services.inference.tasks import RequestContext, StreamPart, TaskBackend
from services.inference.validate import check_inputs

_log = logging.getLogger(__name__)
DEFAULT_WARMUP = "warm-up with zeros (1 for each dynamic dimension)"
DEFAULT_WARMUP_HINT = (
    "; set `warmup` in the model's config to inputs the model accepts, or `warmup: []`"
)


def make_runner(
    session: ort.InferenceSession, signature: Signature, plan: RunnerPlan | None = None
) -> Runner:
    """A blocking callable that runs the session and returns every output by name."""
    if plan is not None and plan.kind == "iobinding":
        return IoBindingRunner(session, signature, plan)
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
    # Plain session.run() on the CPU: a run may take the event loop (Scheduler).
    inline: bool = False


def warmup_samples(config: ModelConfig, signature: Signature) -> list[tuple[str, Tensors]]:
    """The configured warm-up requests by label, checked against the signature."""
    if config.warmup is None:
        return [(DEFAULT_WARMUP, {spec.name: zeros_for(spec) for spec in signature.inputs})]
    specs = {spec.name: spec for spec in signature.inputs}
    samples = []
    for i, sample in enumerate(config.warmup):
        label = f"warm-up sample '{sample.name or i + 1}'"
        arrays = {}
        for name, given in sample.inputs.items():
            spec = specs.get(name)
            if spec is None:
                raise LoadError(f"{label}: unknown input '{name}', expected inputs {sorted(specs)}")
            arrays[name] = _filled(label, spec, given.shape, given.value)
        try:
            samples.append((label, check_inputs(signature, arrays)))
        except InvalidArgument as exc:
            raise LoadError(f"{label}: {exc.message}") from None
    return samples


def _filled(label: str, spec: TensorSpec, shape: tuple[int, ...], value: object) -> np.ndarray:
    if spec.datatype.is_bytes:
        return np.full(shape, str(value), dtype=object)
    try:
        return np.full(shape, value, dtype=spec.datatype.numpy)
    except (TypeError, ValueError, OverflowError):
        raise LoadError(
            f"{label}: input '{spec.name}': value {value!r} is not a {spec.datatype.name}"
        ) from None


def warm_up(runners: list[Runner], samples: list[tuple[str, Tensors]]) -> None:
    """Run every sample on every instance; LoadError naming the sample that failed."""
    for run in runners:
        for label, inputs in samples:
            try:
                run(inputs)
            except Exception as exc:  # noqa: BLE001 - ORT raises bare RuntimeError/Fail types
                hint = DEFAULT_WARMUP_HINT if label == DEFAULT_WARMUP else ""
                raise LoadError(f"{label} failed: {exc}{hint}") from exc


def open_sessions(path: Path, config: ModelConfig) -> Sessions:
    """Create `config.instances` sessions and warm each up; blocking, raises LoadError."""
    sessions = [create_session(path, config) for _ in range(config.instances)]
    signature = signature_of(sessions[0])
    plan = runner_plan(sessions[0].get_providers(), config, signature)
    runners = [make_runner(s, signature, plan) for s in sessions]
    warm_up(runners, warmup_samples(config, signature))
    provider = sessions[0].get_providers()[0]
    if plan.kind != "run":
        _log.info("model %s runs with IO binding on %s:%d", path, plan.device, plan.device_id)
    inline = plan.kind == "run" and provider == CPU
    return Sessions(runners, signature, provider, inline)


@dataclass(eq=False)
class LoadedModel:
    """A READY model version that takes requests."""

    name: str
    version: int
    path: Path
    config: ModelConfig
    signature: Signature
    provider: str
    scheduler: Scheduler | None
    stats: ModelStats = field(default_factory=ModelStats)
    inflight: int = 0
    # A text model (config.task other than "tensor") runs here instead of the scheduler.
    task: TaskBackend | None = None

    @classmethod
    def start(
        cls,
        name: str,
        version: int,
        path: Path,
        config: ModelConfig,
        sessions: Sessions,
        tracing: Tracing | None = None,
    ) -> LoadedModel:
        """Wrap opened sessions with a scheduler; must run on the event loop."""
        stats = ModelStats()
        scheduler = Scheduler(
            sessions.runners,
            batching=config.dynamic_batching,
            batchable=sessions.signature.batchable,
            stats=stats,
            tracing=tracing,
            inline_run_ns=config.inline_run_us * 1000 if sessions.inline else 0,
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

    @classmethod
    def start_task(
        cls, name: str, version: int, path: Path, config: ModelConfig, task: TaskBackend
    ) -> LoadedModel:
        """Wrap a loaded text model; must run on the event loop."""
        task.start()
        _log.info(
            "model %s version %s (%s) ready on %s",
            name,
            version,
            config.task,
            task.provider,
            extra={"model": name, "version": version, "provider": task.provider},
        )
        # A task that counts its runs (texts per run) keeps them in the model's statistics.
        stats = getattr(task, "stats", None)
        if not isinstance(stats, ModelStats):
            stats = ModelStats()
        return cls(
            name, version, path, config, task.signature, task.provider, None, stats, task=task
        )

    @property
    def max_batch_size(self) -> int:
        """What ModelConfig reports: 0 when the model has no dynamic batch dimension."""
        if self.task is not None:
            return 0
        return self.config.dynamic_batching.max_batch_size if self.signature.batchable else 0

    @property
    def decoupled(self) -> bool:
        """Whether one request may get many responses (a generative model)."""
        return self.task is not None and self.task.decoupled

    @property
    def depth(self) -> int:
        """Requests waiting to run."""
        if self.task is not None:
            return self.task.depth
        return self.scheduler.depth if self.scheduler is not None else 0

    async def infer(
        self, inputs: Tensors, deadline: float | None, context: RequestContext | None = None
    ) -> tuple[Tensors, int]:
        """Queue one request and wait for its outputs and queue time."""
        self.inflight += 1
        try:
            if self.task is not None:
                return await self.task.submit(inputs, deadline, context or RequestContext())
            assert self.scheduler is not None
            return await self.scheduler.submit(inputs, deadline)
        finally:
            self.inflight -= 1

    async def stream(
        self, inputs: Tensors, deadline: float | None, context: RequestContext | None = None
    ) -> AsyncIterator[StreamPart]:
        """A decoupled model's responses to one request, as they are made."""
        if self.task is None or not self.task.decoupled:
            outputs, _ = await self.infer(inputs, deadline, context)
            yield StreamPart(outputs, final=True)
            return
        self.inflight += 1
        parts = self.task.stream(inputs, deadline, context or RequestContext())
        try:
            async for part in parts:
                yield part
        finally:
            self.inflight -= 1
            # Closed now, not when collected: a cancelled generation frees its slot.
            aclose = getattr(parts, "aclose", None)
            if aclose is not None:
                await aclose()

    async def close(self) -> None:
        """Finish queued and running requests, then release the sessions."""
        if self.task is not None:
            await self.task.close()
        if self.scheduler is not None:
            await self.scheduler.close()
