"""Model evaluations for explanations: perturbed rows through the model's own scheduler.

Why not one big request: an explanation may need thousands of rows, so the rows go in
chunks of the model's max_batch_size (one row at a time when it does not batch), each
chunk queued, counted and recorded exactly as an inference request is, with the
budget (max_evaluations), the deadline and cancellation checked before each chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import numpy as np

from services.common.errors import Cancelled, DeadlineExceeded, InvalidArgument
from services.common.names import echo
from services.inference.app import Run
from services.inference.model import LoadedModel
from services.inference.tasks import RequestContext

# InferenceApp.recording: a block recorded as one request in the model's statistics
# and metrics, its queue time set on the Run it yields.
Recording = Callable[[LoadedModel], AbstractContextManager[Run]]


@contextlib.contextmanager
def _unrecorded(model: LoadedModel) -> Iterator[Run]:
    yield Run(0)


class Evaluator:
    """Runs rows of inputs through one model within an evaluation budget."""

    def __init__(
        self,
        model: LoadedModel,
        *,
        max_evaluations: int,
        deadline: float | None,
        context: RequestContext | None = None,
        recording: Recording | None = None,
        chunk_rows: int | None = None,
    ) -> None:
        self.model = model
        self.max_evaluations = max_evaluations
        self.deadline = deadline
        self.context = context or RequestContext()
        self._recording = recording or _unrecorded
        # A model that batches takes [rows, ...]; one that does not takes one example,
        # which the rows here carry with a leading axis of 1 (removed when sent).
        self.batched = model.signature.batchable
        self.chunk_rows = chunk_rows or model.max_batch_size or 1
        self._dtypes = {s.name: s.datatype for s in model.signature.inputs}
        # Rows sent through the model so far.
        self.evaluations = 0
        self._closed = False

    def close(self) -> None:
        """Refuse further evaluations (the explanation ended or its caller went away)."""
        self._closed = True

    @property
    def closed(self) -> bool:
        """Whether close() was called."""
        return self._closed

    @property
    def remaining(self) -> int:
        """Rows the budget still allows."""
        return self.max_evaluations - self.evaluations

    async def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every output of the model for `inputs` ([rows, *example shape] each), in order;
        InvalidArgument naming max_evaluations when the rows would exceed the budget."""
        rows = _rows(inputs)
        if rows > self.remaining:
            raise InvalidArgument(
                f"max_evaluations: the explanation needs more than max_evaluations "
                f"{self.max_evaluations} model evaluations (spent {self.evaluations}, "
                f"{rows} more asked); expected a larger max_evaluations or a cheaper method"
            )
        parts: list[dict[str, np.ndarray]] = []
        for start in range(0, rows, self.chunk_rows):
            chunk = {n: a[start : start + self.chunk_rows] for n, a in inputs.items()}
            parts.append(await self._chunk(chunk))
        if not parts:
            return {}
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

    async def _chunk(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One chunk: one request of the model when it batches, else one per row."""
        if self.batched:
            return await self._request(self._typed(inputs), len(next(iter(inputs.values()))))
        rows = []
        for i in range(_rows(inputs)):
            outputs = await self._request(self._typed({n: a[i] for n, a in inputs.items()}), 1)
            rows.append({n: o[None] for n, o in outputs.items()})
        return {name: np.concatenate([r[name] for r in rows]) for name in rows[0]}

    async def _request(self, inputs: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
        """Queue one request, recorded in the model's statistics and metrics."""
        if self._closed:
            raise Cancelled("the explanation was cancelled")
        if self.deadline is not None and asyncio.get_running_loop().time() >= self.deadline:
            raise DeadlineExceeded(
                f"deadline passed after {self.evaluations} model evaluations of the explanation"
            )
        with self._recording(self.model) as run:
            outputs, run.queue_ns = await self.model.infer(inputs, self.deadline, self.context)
        self.evaluations += rows
        return outputs

    def _typed(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Perturbed rows (often float64 from numpy arithmetic) in the inputs' datatypes."""
        typed = {}
        for name, array in inputs.items():
            datatype = self._dtypes[name]
            typed[name] = (
                array if datatype.is_bytes else np.ascontiguousarray(array, dtype=datatype.numpy)
            )
        return typed


def _rows(inputs: dict[str, np.ndarray]) -> int:
    counts = {len(a) for a in inputs.values()}
    if len(counts) != 1:
        raise ValueError(f"inputs have different row counts {sorted(counts)}")
    return counts.pop()


def target_values(outputs: dict[str, np.ndarray], output: str, target: int) -> np.ndarray:
    """The explained element of `output` for each row, as float64 [rows]."""
    array = outputs[output]
    return np.asarray(array.reshape(len(array), -1)[:, target], dtype=np.float64)


def resolve_target(output: str, at_input: np.ndarray, target: int | None) -> int:
    """The element explained: `target` checked against the output's example row
    (`at_input`, the output for the one input), or its largest element when unset."""
    row = np.asarray(at_input).reshape(-1)
    if row.size == 0:
        raise InvalidArgument(f"output {echo(output)}: empty at the input, nothing to explain")
    if target is None:
        return int(np.argmax(row))
    if not 0 <= target < row.size:
        raise InvalidArgument(
            f"target: {target} is out of range for output {echo(output)} of shape "
            f"{list(np.asarray(at_input).shape)}, expected 0..{row.size - 1}"
        )
    return target
