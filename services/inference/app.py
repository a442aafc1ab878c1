"""The inference application layer: plain Python, no grpc."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from services.common.errors import DeadlineExceeded, ServiceError, Unimplemented
from services.common.streams import close_iterator
from services.common.tensors import Encoded
from services.inference.config import DynamicBatching
from services.inference.manager import IndexEntry, ModelManager
from services.inference.metrics import InferenceMetrics
from services.inference.model import LoadedModel
from services.inference.repository import DirectorySource
from services.inference.runtime import TensorSpec
from services.inference.stats import StatsSnapshot
from services.inference.tasks import RequestContext
from services.inference.validate import (
    TensorLimits,
    check_encoded,
    check_outputs,
    decode_costly,
    decode_inputs,
)

PLATFORM = "onnxruntime_onnx"


@dataclass(frozen=True)
class InferRequest:
    """One inference request; its tensors are decoded once they fit the model."""

    model: str
    version: str
    id: str
    inputs: dict[str, Encoded]
    outputs: tuple[str, ...] = ()
    # Event-loop time after which the request must not run; None for no deadline.
    deadline: float | None = None
    # The request's v2 parameters, as Python values.
    parameters: Mapping[str, object] = field(default_factory=dict)
    # The caller's API key id, as the gateway passed it ("" when none).
    key_id: str = ""

    @property
    def context(self) -> RequestContext:
        """What a text model needs of the request beyond its tensors."""
        return RequestContext(self.key_id, self.parameters)


@dataclass(frozen=True)
class InferResult:
    """The outputs of one request and the version that produced them."""

    model: str
    version: str
    id: str
    outputs: dict[str, np.ndarray]
    # False on all but the last result of a streamed request (a decoupled model's).
    final: bool = True
    # Made by a decoupled model, whose results come as a stream of responses.
    decoupled: bool = False


@dataclass(frozen=True)
class ModelDetails:
    """What ModelConfig reports of a ready version."""

    name: str
    platform: str
    max_batch_size: int
    filename: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    provider: str
    instances: int
    batching: DynamicBatching
    # One request may get many responses (a generative model).
    decoupled: bool = False


@dataclass(frozen=True)
class ModelMetadata:
    """What ModelMetadata reports."""

    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


@dataclass
class Run:
    """One request being recorded (InferenceApp.recording): when it started and the
    time it spent queued, once the scheduler says."""

    started: int
    queue_ns: int | None = None


class InferenceApp:
    """Requests in, results out, over the model manager."""

    def __init__(
        self,
        manager: ModelManager,
        source: DirectorySource | None = None,
        metrics: InferenceMetrics | None = None,
        limits: TensorLimits | None = None,
    ) -> None:
        self.manager = manager
        self.source = source
        self.metrics = metrics
        self.limits = limits or TensorLimits()
        self.draining = False

    async def infer(self, request: InferRequest) -> InferResult:
        """Validate, queue and run one request, recording its statistics; a decoupled
        model's whole answer."""
        started = time.monotonic_ns()
        model = self._resolve(request)
        with self.recording(model, started) as run:
            inputs, names = await self._checked(model, request)
            outputs, run.queue_ns = await model.infer(inputs, request.deadline, request.context)
        return InferResult(
            model.name,
            str(model.version),
            request.id,
            {n: outputs[n] for n in names if n in outputs},
        )

    async def stream(self, request: InferRequest) -> AsyncIterator[InferResult]:
        """One request's results as the model makes them: many for a decoupled model
        (the last one `final`), one otherwise; validated, counted and recorded as
        `infer` is. Closing the iterator cancels the request."""
        started = time.monotonic_ns()
        model = self._resolve(request)
        code = "INTERNAL"
        version = str(model.version)
        try:
            inputs, names = await self._checked(model, request)
            parts = model.stream(inputs, request.deadline, request.context)
            try:
                async for part in parts:
                    outputs = {n: part.outputs[n] for n in names if n in part.outputs}
                    yield InferResult(
                        model.name, version, request.id, outputs, part.final, model.decoupled
                    )
            finally:
                await close_iterator(parts)
            code = "OK"
        except ServiceError as exc:
            code = exc.status
            raise
        except (asyncio.CancelledError, GeneratorExit):
            code = "CANCELLED"
            raise
        finally:
            self.record(model, code, started, None)

    def _resolve(self, request: InferRequest) -> LoadedModel:
        try:
            return self.manager.resolve(request.model, request.version)
        except ServiceError as exc:
            # Unknown names stay out of the labels: they are client input, unbounded.
            self._count("", "", exc.status)
            raise

    async def _checked(
        self, model: LoadedModel, request: InferRequest
    ) -> tuple[dict[str, np.ndarray], tuple[str, ...]]:
        """The request's inputs decoded for the model and the outputs it asks for."""
        inputs = await self._decode(model, request.inputs)
        names = check_outputs(model.signature, request.outputs)
        deadline = request.deadline
        if deadline is not None and asyncio.get_running_loop().time() >= deadline:
            raise DeadlineExceeded("deadline passed before the request was queued")
        return inputs, names

    @contextlib.contextmanager
    def recording(self, model: LoadedModel, started: int | None = None) -> Iterator[Run]:
        """Record the request the block runs (its code from how the block ends, the
        queue time it sets on the Run): ModelInfer's, and each chunk of an explanation's
        evaluations (services.inference.explain.evaluate)."""
        run = Run(time.monotonic_ns() if started is None else started)
        code = "INTERNAL"
        try:
            yield run
            code = "OK"
        except ServiceError as exc:
            code = exc.status
            raise
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        finally:
            self.record(model, code, run.started, run.queue_ns)

    def record(self, model: LoadedModel, code: str, started: int, queue_ns: int | None) -> None:
        """Count one finished request (statistics and metrics)."""
        elapsed = time.monotonic_ns() - started
        model.stats.record_request(code == "OK", elapsed, queue_ns)
        self._observe(model, code, elapsed, queue_ns)

    async def _decode(
        self, model: LoadedModel, tensors: dict[str, Encoded]
    ) -> dict[str, np.ndarray]:
        """The inputs decoded once they fit the model; a costly decode runs in a thread,
        so that one request's BYTES elements do not stall every other client."""
        checked = check_encoded(model.signature, tensors, model.max_batch_size, self.limits)
        if decode_costly(checked):
            return await asyncio.to_thread(decode_inputs, checked)
        return decode_inputs(checked)

    def _count(self, model: str, version: str, code: str) -> None:
        if self.metrics is not None:
            self.metrics.requests(model, version, code).inc()

    def _observe(
        self, model: LoadedModel, code: str, elapsed_ns: int, queue_ns: int | None
    ) -> None:
        if self.metrics is None:
            return
        labels = (model.name, str(model.version))
        self.metrics.requests(*labels, code).inc()
        self.metrics.request_seconds(*labels).observe(elapsed_ns / 1e9)
        if queue_ns is not None:
            self.metrics.queue_seconds(*labels).observe(queue_ns / 1e9)

    def metadata(self, name: str, version: str) -> ModelMetadata:
        """Names, datatypes and shapes of a ready version."""
        model = self.manager.resolve(name, version)
        versions = tuple(str(m.version) for m in self.manager.loaded() if m.name == name)
        return ModelMetadata(
            name, versions, PLATFORM, model.signature.inputs, model.signature.outputs
        )

    def details(self, name: str, version: str) -> ModelDetails:
        """The serving configuration of the ready version a request names."""
        model = self.manager.resolve(name, version)
        return ModelDetails(
            model.name,
            PLATFORM,
            model.max_batch_size,
            model.path.name,
            model.signature.inputs,
            model.signature.outputs,
            model.provider,
            model.config.instances,
            model.config.dynamic_batching,
            model.decoupled,
        )

    def statistics(self, name: str, version: str) -> list[StatsSnapshot]:
        """Statistics of the loaded versions asked for (all when name is empty)."""
        if name and version:
            models = [self.manager.resolve(name, version)]
        elif name:
            self.manager.resolve(name, "")
            models = [m for m in self.manager.loaded() if m.name == name]
        else:
            models = self.manager.loaded()
        return [m.stats.snapshot(m.name, str(m.version)) for m in models]

    def model_ready(self, name: str, version: str) -> bool:
        """Whether the named version (any version when empty) takes requests."""
        return self.manager.ready(name, version)

    def index(self, ready_only: bool) -> list[IndexEntry]:
        """Every model version this server knows, with its state."""
        return self.manager.index(ready_only)

    async def load(self, name: str) -> None:
        """Load or reload a model from the repository."""
        if self.source is None:
            raise Unimplemented("this server follows the registry; load models there")
        await self.source.load(name)

    async def unload(self, name: str) -> None:
        """Unload every version of a model; in-flight requests finish first."""
        if self.source is None:
            raise Unimplemented("this server follows the registry; unload models there")
        await self.source.unload(name)

    def ready(self) -> bool:
        """Server readiness: up and not draining."""
        return not self.draining
