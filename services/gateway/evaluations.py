"""Per-key evaluation budgets: what explanations may spend, apart from the request rate.

An explanation costs one request of the key's ordinary rate limit plus the model
evaluations it may spend (its max_evaluations) from a token bucket of its own, so
a large explanation is never refused merely for being larger than the request-rate
burst, and a key's explanations cannot crowd out its inferences.

A cost above the bucket's burst is charged as the whole burst: such an explanation
is admitted when the bucket is full and empties it, rather than never. What the
explanation did not spend (the reply's `evaluations` is below the charge) is given
back once it has answered.

With Redis (services.gateway.limiter) the budget is one bucket for every replica,
`maas:ev:<key id>`, taken from and given back to by the same atomic script as the
request rate; when Redis fails, its policy decides as for the rate (fail-open: the
replica's own bucket; fail-closed: UNAVAILABLE). Buckets exist only for configured
keys, so the state is bounded by the keys file.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from services.common.errors import ResourceExhausted, ServiceError

if TYPE_CHECKING:
    from services.gateway.auth import ApiKey, TokenBucket
    from services.gateway.limiter import SharedLimiter

# The Redis keys of explanation budgets (services.gateway.limiter.bucket_name).
SHARED_PREFIX = "maas:ev:"

DEFAULT_EVALUATIONS_PER_SECOND = 1000.0
DEFAULT_EVALUATIONS_BURST = 8192.0


@dataclass(frozen=True)
class EvaluationRate:
    """A budget's refill rate (evaluations per second) and burst."""

    per_second: float = DEFAULT_EVALUATIONS_PER_SECOND
    burst: float = DEFAULT_EVALUATIONS_BURST


class EvaluationBudget:
    """One evaluation bucket per configured key (services.gateway.auth.KeyTable makes
    them, at the key's own rate or the gateway's), kept in Redis when `shared` is set."""

    def __init__(
        self,
        buckets: dict[str, TokenBucket],
        clock: Callable[[], float] = time.monotonic,
        shared: SharedLimiter | None = None,
    ) -> None:
        self._buckets = buckets
        self._clock = clock
        self._shared = shared

    async def spend(self, key: ApiKey, cost: int) -> float:
        """Take `cost` evaluations (at most the burst) from the key's bucket and return
        what was taken; RESOURCE_EXHAUSTED naming the budget when it has too few
        (UNAVAILABLE when a fail-closed shared limiter cannot be reached)."""
        bucket = self._buckets.get(key.id)
        if bucket is None:
            return 0.0
        charge = float(min(max(cost, 0), bucket.burst))
        if self._shared is not None:
            taken = await self._shared.take(
                key.id, bucket.rate, bucket.burst, charge, SHARED_PREFIX
            )
            if taken is not None:
                if not taken.taken:
                    raise _over(key, bucket, charge, taken.retry_after(bucket.rate, charge))
                return charge
        if not bucket.take(self._clock(), charge):
            raise _over(key, bucket, charge, (charge - bucket.tokens) / bucket.rate)
        return charge

    async def refund(self, key: ApiKey, amount: float) -> None:
        """Give back evaluations charged but not spent (to Redis when it holds the
        budget; a refund Redis cannot take is dropped, never an error for the call)."""
        bucket = self._buckets.get(key.id)
        if bucket is None or amount <= 0:
            return
        if self._shared is not None:
            try:
                taken = await self._shared.take(
                    key.id, bucket.rate, bucket.burst, -amount, SHARED_PREFIX
                )
            except ServiceError:  # fail-closed and Redis away: the refund is lost
                return
            if taken is not None:
                return
        bucket.give(self._clock(), amount)


def _over(key: ApiKey, bucket: TokenBucket, charge: float, retry_after: float) -> ResourceExhausted:
    return ResourceExhausted(
        f"API key '{key.id}' is over its explanation budget of {bucket.rate:g} "
        f"evaluations/s (burst {bucket.burst:g}; this explanation needs {charge:g}: "
        "lower parameters.max_evaluations or wait)",
        retry_after=retry_after,
    )
