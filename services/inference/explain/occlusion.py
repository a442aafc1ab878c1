"""Occlusion attributions: how much the output drops when a patch of the input is hidden.

A patch of `patch_size` (per spatial axis) set to `baseline` slides over each input
with `stride` (default: the patch size, so patches tile the input). A patch's drop
f(x) - f(x occluded) is shared equally among its elements, and an element that
several patches cover gets the mean of its shares, so the attributions add up to
about f(x) - f(fully occluded); the gap is the error estimate. Spatial axes: the last
two of an example of rank 3 or more, or the two before its channels when they come
last ([H, W, C]); a patch spans the channels. Else all axes.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np

from services.common.errors import InvalidArgument
from services.common.names import echo
from services.inference.explain.evaluate import Evaluator, resolve_target, target_values
from services.inference.explain.job import ExplainJob, Explanation
from services.inference.explain.params import float_param, int_param

# Examples of at most this many elements default to single-element patches.
SMALL_INPUT = 1024
LARGE_PATCH = 8
# A last axis this small in an image is its channels (RGB, RGBA: channels last).
MAX_CHANNELS = 4

Window = tuple[slice, ...]


def windows(shape: tuple[int, ...], patch: int, stride: int) -> list[Window]:
    """The patches over an example of `shape` (no batch axis), as slices per axis."""
    axes = []
    spatial = _spatial_axes(shape)
    for axis, size in enumerate(shape):
        if axis in spatial:
            axes.append([slice(s, min(s + patch, size)) for s in range(0, size, stride)])
        else:
            axes.append([slice(None)])
    return [tuple(w) for w in itertools.product(*axes)]


def _spatial_axes(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The axes a patch slides over: all of a rank 1 or 2 example; of an image, the two
    before a last axis of at most 4 channels (channels last, [H, W, C]), else the last
    two ([C, H, W])."""
    rank = len(shape)
    if rank < 3:
        return tuple(range(rank))
    if shape[-1] <= MAX_CHANNELS < shape[-3]:
        return (rank - 3, rank - 2)
    return (rank - 2, rank - 1)


def _plan(job: ExplainJob) -> tuple[int, int, dict[str, list[Window]]]:
    """Patch size, stride and each input's patches, within max_evaluations."""
    given = int_param(job.parameters, "patch_size", None, minimum=1)
    stride_given = int_param(job.parameters, "stride", None, minimum=1)
    largest = max(a[0].size for a in job.inputs.values())
    patch = given or (1 if largest <= SMALL_INPUT else LARGE_PATCH)
    extent = max((max(a.shape[1:], default=1) for a in job.inputs.values()), default=1)
    while True:
        stride = stride_given or patch
        if stride > patch:
            raise InvalidArgument(
                f"parameters.stride: {stride} is larger than patch_size {patch}, which would "
                "leave elements no patch covers; expected at most the patch size"
            )
        plan = {n: windows(a.shape[1:], patch, stride) for n, a in job.inputs.items()}
        needed = sum(len(w) for w in plan.values()) + 2
        if needed <= job.max_evaluations:
            return patch, stride, plan
        if given is not None or patch >= extent:
            raise InvalidArgument(
                f"max_evaluations: occlusion with patch_size {patch} and stride {stride} "
                f"needs {needed} model evaluations, expected max_evaluations of at least "
                f"that (got {job.max_evaluations}) or a larger patch_size"
            )
        patch *= 2  # the default patch grows until the input fits the budget


def _check_numeric(job: ExplainJob) -> None:
    for name, array in job.inputs.items():
        if array.dtype.kind not in "biuf":
            raise InvalidArgument(
                f"method: occlusion needs numeric inputs, got input {echo(name)} of BYTES; "
                "expected method 'tokens' for text"
            )


def _occluded_rows(
    job: ExplainJob, name: str, patches: list[Window], baseline: float
) -> dict[str, np.ndarray]:
    """One row per patch: the input with that patch of `name` set to the baseline."""
    rows = {n: np.repeat(a, len(patches), axis=0) for n, a in job.inputs.items()}
    target = rows[name]
    for i, window in enumerate(patches):
        index: tuple[int | slice, ...] = (i, *window)
        target[index] = baseline
    return rows


def _chunks(items: list[Window], size: int) -> Iterator[list[Window]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


async def explain_occlusion(job: ExplainJob, evaluator: Evaluator) -> Explanation:
    """Occlusion attributions for `job`, one evaluation per patch plus two."""
    _check_numeric(job)
    baseline = float_param(job.parameters, "baseline", 0.0)
    _, _, plan = _plan(job)
    at_input = await evaluator.run(job.inputs)
    target = resolve_target(job.output, at_input[job.output][0], job.target)
    fx = float(target_values(at_input, job.output, target)[0])
    hidden = {n: np.full_like(a, baseline) for n, a in job.inputs.items()}
    base = float(target_values(await evaluator.run(hidden), job.output, target)[0])
    attributions: dict[str, np.ndarray] = {}
    for name, patches in plan.items():
        shape = job.inputs[name].shape[1:]
        shares = np.zeros(shape, dtype=np.float64)
        covers = np.zeros(shape, dtype=np.int64)
        # A chunk's worth of occluded rows at a time: memory stays bounded.
        for chunk in _chunks(patches, evaluator.chunk_rows):
            rows = _occluded_rows(job, name, chunk, baseline)
            values = target_values(await evaluator.run(rows), job.output, target)
            for window, value in zip(chunk, values, strict=True):
                size = shares[window].size
                shares[window] += (fx - float(value)) / size
                covers[window] += 1
        attributions[name] = (shares / np.maximum(covers, 1))[None]
    return Explanation.additive(
        job,
        attributions,
        target=target,
        base_value=base,
        output_value=fx,
        evaluations=evaluator.evaluations,
    )
