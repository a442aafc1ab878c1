"""The explain application layer: a request in, an explanation out; plain Python, no grpc."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace

import numpy as np

from services.common.errors import InvalidArgument
from services.common.names import echo
from services.inference.app import InferenceApp
from services.inference.explain.background import decode_background
from services.inference.explain.evaluate import Evaluator
from services.inference.explain.job import ExplainJob, Explanation
from services.inference.explain.methods import METHODS, check_method
from services.inference.explain.params import int_param
from services.inference.explain.request import ExplainRequest
from services.inference.model import LoadedModel
from services.inference.tasks import RequestContext
from services.inference.validate import check_encoded, decode_costly, decode_inputs

# A request that names no max_evaluations gets this many, or the server's cap if lower.
DEFAULT_EVALUATIONS = 2048
# What an explanation of an embedding model explains when the request names no output
# (services.inference.tasks.embedding.EMBEDDING; that module needs the `text` extra).
EMBEDDING_OUTPUT = "embedding"


@dataclass(frozen=True)
class ExplainResult:
    """An explanation and the version that gave it."""

    model: str
    version: str
    id: str
    method: str
    explanation: Explanation


class Explainer:
    """Explains one prediction of a served model with the model's own inference."""

    def __init__(self, app: InferenceApp, max_evaluations: int = 8192) -> None:
        self.app = app
        # The server's cap on one request's max_evaluations.
        self.max_evaluations = max_evaluations

    async def explain(self, request: ExplainRequest) -> ExplainResult:
        """Validate the request, run its method, and return the attributions."""
        method = check_method(request.method)
        budget = self._budget(request)
        model = self.app.manager.resolve(request.model, request.version)
        if model.decoupled:
            raise InvalidArgument(
                f"method: {echo(method)} explains a model that answers each request once, got "
                f"{echo(model.name)}, a generative model whose answers are a stream"
            )
        job = await self._job(model, request, method, budget)
        evaluator = Evaluator(
            model,
            max_evaluations=budget,
            deadline=request.deadline,
            context=job.context,
            # Each chunk is recorded as InferenceApp.infer records a request.
            recording=self.app.recording,
            chunk_rows=_chunk_rows(model),
        )
        try:
            explanation = await METHODS[method](job, evaluator)
        finally:
            evaluator.close()
        if not model.signature.batchable:
            explanation = _unbatched(explanation, job)
        return ExplainResult(model.name, str(model.version), request.id, method, explanation)

    def _budget(self, request: ExplainRequest) -> int:
        cap = self.max_evaluations
        asked = int_param(request.parameters, "max_evaluations", None, minimum=1)
        if asked is None:
            return min(DEFAULT_EVALUATIONS, cap)
        if asked > cap:
            raise InvalidArgument(
                f"max_evaluations: {asked} is over the server's cap, expected at most {cap}"
            )
        return asked

    async def _job(
        self, model: LoadedModel, request: ExplainRequest, method: str, budget: int
    ) -> ExplainJob:
        """The request decoded for the model: one example, the output, the background."""
        checked = check_encoded(
            model.signature, request.inputs, model.max_batch_size, self.app.limits
        )
        if decode_costly(checked):
            inputs = await asyncio.to_thread(decode_inputs, checked)
        else:
            inputs = decode_inputs(checked)
        example = _example(model, inputs)
        background = None
        if request.background is not None:
            background = decode_background(request.background, example, self.app.limits)
        params = {k: v for k, v in request.parameters.items() if k != "max_evaluations"}
        return ExplainJob(
            model=model,
            inputs=example,
            output=_output(model, request.output),
            target=request.target,
            method=method,
            parameters=params,
            background=background,
            max_evaluations=budget,
            deadline=request.deadline,
            context=RequestContext(request.key_id, request.parameters),
        )


def _is_embedding(model: LoadedModel) -> bool:
    return model.task is not None and model.config.task == "embedding"


def _chunk_rows(model: LoadedModel) -> int | None:
    """Rows per request: the model's max_batch_size; an embedding model reports 0 (its
    batching is the task's own), so its texts go in batches of the task's size."""
    if _is_embedding(model):
        return model.config.embedding.max_batch_size
    return None


def _example(model: LoadedModel, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The inputs as one example with a leading batch axis of 1."""
    if not model.signature.batchable:
        return {n: a[None] for n, a in inputs.items()}
    for name, array in inputs.items():
        if array.shape[0] != 1:
            raise InvalidArgument(
                f"input {echo(name)}: batch size {array.shape[0]} (dimension 0 of shape "
                f"{list(array.shape)}), expected 1: an explanation is of one example"
            )
    return inputs


def _output(model: LoadedModel, name: str) -> str:
    outputs = {spec.name: spec for spec in model.signature.outputs}
    if not name and _is_embedding(model):
        name = EMBEDDING_OUTPUT  # its num_input_tokens beside it is a count, not a prediction
    if not name:
        if len(outputs) != 1:
            raise InvalidArgument(
                f"output: the model has {len(outputs)} outputs, expected the name of one "
                f"of {sorted(outputs)}"
            )
        name = next(iter(outputs))
    spec = outputs.get(name)
    if spec is None:
        raise InvalidArgument(
            f"output: unknown output {echo(name)}, expected one of {sorted(outputs)}"
        )
    if spec.datatype.is_bytes:
        raise InvalidArgument(f"output {echo(name)}: is BYTES, expected a numeric output")
    return name


def _unbatched(explanation: Explanation, job: ExplainJob) -> Explanation:
    """Attributions shaped like the inputs of a model that takes no batch axis."""
    attributions = {
        name: a[0] if a.shape == job.inputs[name].shape else a
        for name, a in explanation.attributions.items()
    }
    return replace(explanation, attributions=attributions)
