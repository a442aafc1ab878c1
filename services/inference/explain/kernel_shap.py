"""KernelSHAP attributions with the shap library, over every input's features at once.

The inputs' elements are flattened and concatenated into one feature row (and split
back per input for the model and for the answer). shap is synchronous: it runs in a
worker thread, and its model function hands each batch of rows back to the event loop,
where the Evaluator sends them through the model's scheduler in chunks.

Cost: shap evaluates the background once (n rows) and the input once, then n rows
per coalition sample; with the input's own evaluation here that is 2 + n * (samples +
1) rows, so the samples are what max_evaluations leaves. With few features shap
enumerates every coalition (2^M - 2) and the attributions are exact.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import numpy as np

from services.common.errors import Cancelled, FailedPrecondition, InvalidArgument
from services.common.names import echo
from services.inference.explain.background import stored_background
from services.inference.explain.evaluate import Evaluator, resolve_target, target_values
from services.inference.explain.job import ExplainJob, Explanation
from services.inference.explain.params import int_param

# shap samples coalitions with numpy's global random state: runs take turns, so that
# a seed gives the same attributions whatever else runs.
_SHAP_RANDOM = threading.Lock()
T = TypeVar("T")
# How often shap's thread checks that its explanation is still wanted.
WAKE_SECONDS = 1.0


def load_shap() -> Any:
    """The shap module; FAILED_PRECONDITION when the 'explain' extra is not installed."""
    try:
        # Imported by name: the library ships no type information, and is optional.
        return importlib.import_module("shap")
    except ImportError:
        raise FailedPrecondition(
            "method 'kernel_shap' needs the 'explain' extra (pip install 'maas[explain]')"
        ) from None


class _Features:
    """The inputs' elements as one flat feature row, and back."""

    def __init__(self, inputs: dict[str, np.ndarray]) -> None:
        self.shapes = {n: a.shape[1:] for n, a in inputs.items()}
        self.sizes = {n: int(np.prod(s, dtype=np.int64)) for n, s in self.shapes.items()}

    def flat(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        rows = len(next(iter(arrays.values())))
        parts = [np.asarray(arrays[n], dtype=np.float64).reshape(rows, -1) for n in self.shapes]
        return np.concatenate(parts, axis=1)

    def split(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        out, start = {}, 0
        for name, shape in self.shapes.items():
            size = self.sizes[name]
            out[name] = flat[:, start : start + size].reshape(len(flat), *shape)
            start += size
        return out


def _check_numeric(job: ExplainJob) -> None:
    for name, array in job.inputs.items():
        if array.dtype.kind not in "biuf":
            raise InvalidArgument(
                f"method: kernel_shap needs numeric inputs, got input {echo(name)} of BYTES; "
                "expected method 'tokens' for text"
            )


async def _background(job: ExplainJob) -> dict[str, np.ndarray]:
    if job.background is not None:
        return job.background
    stored = await stored_background(job.model, job.inputs)
    if stored is None:
        raise InvalidArgument(
            "background: the request has none and the model version stores none "
            "(background.npz beside its model.onnx); expected background tensors named "
            f"like the inputs {sorted(job.inputs)}, shaped [n, *example shape]"
        )
    return stored


def _samples(job: ExplainJob, rows: int, features: int) -> int:
    """The coalition samples max_evaluations allows, at least the few shap needs."""
    fixed = 2 + rows  # the input here and in shap, and the background once
    samples = (job.max_evaluations - fixed) // rows
    least = min(2**features - 2, 2 * features) if features < 62 else 2 * features
    least = max(least, 1)
    if samples < least:
        raise InvalidArgument(
            f"max_evaluations: kernel_shap with {rows} background rows and {features} "
            f"features needs at least {fixed + least * rows} model evaluations "
            f"({fixed} + {least} samples of {rows} rows), got {job.max_evaluations}; "
            "expected a larger max_evaluations or fewer background rows"
        )
    return samples


def on_loop(
    coro: Coroutine[Any, Any, T], loop: asyncio.AbstractEventLoop, evaluator: Evaluator
) -> T:
    """From a worker thread: run `coro` on the event loop and wait for it, in slices, so
    that the thread gives up once the explanation is closed or the loop is gone (a loop
    that stopped would never answer)."""
    future = asyncio.run_coroutine_threadsafe(coro, loop)
    while True:
        try:
            return future.result(timeout=WAKE_SECONDS)
        except concurrent.futures.TimeoutError:
            if evaluator.closed or loop.is_closed():
                future.cancel()
                raise Cancelled("the explanation was cancelled") from None


async def explain_kernel_shap(job: ExplainJob, evaluator: Evaluator) -> Explanation:
    """KernelSHAP attributions for `job`, within its max_evaluations."""
    shap = load_shap()
    _check_numeric(job)
    background = await _background(job)
    features = _Features(job.inputs)
    rows = len(next(iter(background.values())))
    width = sum(features.sizes.values())
    samples = _samples(job, rows, width)
    seed = (int_param(job.parameters, "seed", 0, minimum=0) or 0) % 2**32
    at_input = await evaluator.run(job.inputs)
    target = resolve_target(job.output, at_input[job.output][0], job.target)
    fx = float(target_values(at_input, job.output, target)[0])
    loop = asyncio.get_running_loop()

    def model(flat: np.ndarray) -> np.ndarray:
        # On shap's thread: the rows go through the event loop's evaluator.
        coro = evaluator.run(features.split(np.asarray(flat)))
        outputs = on_loop(coro, loop, evaluator)
        return target_values(outputs, job.output, target)

    x = features.flat(job.inputs)
    phi, base = await asyncio.to_thread(
        run_shap, shap, model, features.flat(background), x, samples, seed
    )
    split = features.split(phi[None])
    attributions = {n: a.reshape(job.inputs[n].shape) for n, a in split.items()}
    return Explanation.additive(
        job,
        attributions,
        target=target,
        base_value=base,
        output_value=fx,
        evaluations=evaluator.evaluations,
    )


def run_shap(
    shap: Any,
    model: Callable[[np.ndarray], np.ndarray],
    background: np.ndarray,
    x: np.ndarray,
    samples: int,
    seed: int,
) -> tuple[np.ndarray, float]:
    """(attributions [features], E[f] over the background): blocking, on a worker thread."""
    with _SHAP_RANDOM:
        state = np.random.get_state()
        np.random.seed(seed)
        try:
            explainer = shap.KernelExplainer(model, background, link="identity")
            phi = explainer.shap_values(x, nsamples=samples, l1_reg=False, silent=True)
        finally:
            np.random.set_state(state)
    base = float(np.asarray(explainer.expected_value).reshape(-1)[0])
    return np.asarray(phi, dtype=np.float64).reshape(-1), base
