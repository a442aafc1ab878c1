"""Per-key evaluation budgets: what explanations may spend, apart from the request rate.

An explanation costs one request of the key's ordinary rate limit plus the model
evaluations it may spend (its max_evaluations) from a token bucket of its own, so
a large explanation is never refused merely for being larger than the request-rate
burst, and a key's explanations cannot crowd out its inferences.

A cost above the bucket's burst is charged as the whole burst: such an explanation
is admitted when the bucket is full and empties it, rather than never. What the
explanation did not spend (the reply's `evaluations` is below the charge) is given
back once it has answered.

The buckets are each replica's own, even when the request rate is shared through
Redis (services.gateway.limiter): explanations are rare and costly, so a key's
budget across N replicas is at most N times its setting, which the settings say.
Buckets exist only for configured keys, so the state is bounded by the keys file.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from services.common.errors import ResourceExhausted

if TYPE_CHECKING:
    from services.gateway.auth import ApiKey, TokenBucket

DEFAULT_EVALUATIONS_PER_SECOND = 1000.0
DEFAULT_EVALUATIONS_BURST = 8192.0


@dataclass(frozen=True)
class EvaluationRate:
    """A budget's refill rate (evaluations per second) and burst."""

    per_second: float = DEFAULT_EVALUATIONS_PER_SECOND
    burst: float = DEFAULT_EVALUATIONS_BURST


class EvaluationBudget:
    """One evaluation bucket per configured key (services.gateway.auth.KeyTable makes
    them, at the key's own rate or the gateway's)."""

    def __init__(
        self, buckets: dict[str, TokenBucket], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._buckets = buckets
        self._clock = clock

    def spend(self, key: ApiKey, cost: int) -> float:
        """Take `cost` evaluations (at most the burst) from the key's bucket and return
        what was taken; RESOURCE_EXHAUSTED naming the budget when it has too few."""
        bucket = self._buckets.get(key.id)
        if bucket is None:
            return 0.0
        charge = float(min(max(cost, 0), bucket.burst))
        if not bucket.take(self._clock(), charge):
            raise ResourceExhausted(
                f"API key '{key.id}' is over its explanation budget of {bucket.rate:g} "
                f"evaluations/s (burst {bucket.burst:g}; this explanation needs {charge:g}: "
                "lower parameters.max_evaluations or wait)",
                retry_after=(charge - bucket.tokens) / bucket.rate,
            )
        return charge

    def refund(self, key: ApiKey, amount: float) -> None:
        """Give back evaluations charged but not spent."""
        bucket = self._buckets.get(key.id)
        if bucket is not None and amount > 0:
            bucket.take(self._clock(), 0.0)  # refill to now first
            bucket.tokens = min(bucket.burst, bucket.tokens + amount)
