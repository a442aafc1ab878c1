"""What an explanation is asked to do, and what it answers: plain dataclasses."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from services.inference.model import LoadedModel
from services.inference.tasks import RequestContext


@dataclass(frozen=True)
class ExplainJob:
    """One decoded, validated explain request, ready for a method."""

    model: LoadedModel
    # The example, one array per input, each with a leading batch dimension of 1.
    inputs: dict[str, np.ndarray]
    # The output explained (resolved when the request named none).
    output: str
    # The element of the output's example row explained; None: the largest at the input.
    target: int | None
    method: str
    # The method's parameters, as Python values (max_evaluations removed).
    parameters: Mapping[str, object]
    # Rows to integrate features out over, named like the inputs: [n, *example shape].
    background: dict[str, np.ndarray] | None
    max_evaluations: int
    # Event-loop time after which no more evaluations start; None for no deadline.
    deadline: float | None
    context: RequestContext = field(default_factory=RequestContext)


@dataclass(frozen=True)
class Explanation:
    """Attributions for one output element, and the figures that check them."""

    # One per input, named after it: the input's shape (tokens: [n_tokens]).
    attributions: dict[str, np.ndarray]
    # The tokens method: the token strings the attributions are for.
    tokens: list[str] | None
    output: str
    target: int
    # The output element at the baseline (E[f] over the background; occluded input).
    base_value: float
    # The output element at the input.
    output_value: float
    # |sum(attributions) - (output_value - base_value)| for additive methods.
    error_estimate: float
    # Rows sent through the model.
    evaluations: int

    @classmethod
    def additive(
        cls,
        job: ExplainJob,
        attributions: dict[str, np.ndarray],
        *,
        target: int,
        base_value: float,
        output_value: float,
        evaluations: int,
        tokens: list[str] | None = None,
    ) -> Explanation:
        """An additive method's answer: its error estimate is how far the attributions'
        sum is from output_value - base_value."""
        total = float(sum(float(a.sum()) for a in attributions.values()))
        return cls(
            attributions=attributions,
            tokens=tokens,
            output=job.output,
            target=target,
            base_value=base_value,
            output_value=output_value,
            error_estimate=abs(total - (output_value - base_value)),
            evaluations=evaluations,
        )
