"""API keys: who may call, which methods and models, how often and how many streams.

Keys come from a YAML file (`keys: [{id, sha256 | key, rate_per_second, burst,
models, scopes, explain_evaluations_per_second, explain_evaluations_burst}]`;
plain `key:` entries are hashed at load) or from the
MAAS_GATEWAY_API_KEYS setting. Only sha256 digests are kept, compared in
constant time; the key itself is never logged, and errors name the key's id.
Scopes (services.gateway.scopes) say which methods a key may call; without a
`scopes` list a key has them all. Rate limits are counted here, per replica (one
table for all the workers of a `--workers` supervisor, services.gateway.worker_limits),
or in Redis for every replica at once (services.gateway.limiter); the replica's own
buckets stay for when Redis fails under the fail-open policy. Explanations also
draw on an evaluation budget per key (services.gateway.evaluations).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from services.common.errors import PermissionDenied, ResourceExhausted, Unauthenticated
from services.common.tokens import bearer_token, entry_digest, file_entries, match_digest
from services.gateway.evaluations import EvaluationBudget, EvaluationRate
from services.gateway.scopes import ALL_SCOPES, parse_scopes, scope_of

if TYPE_CHECKING:  # redis is an optional extra: imported only when configured
    from services.gateway.limiter import SharedLimiter


@dataclass(frozen=True)
class ApiKey:
    """A configured key: id (safe to log), digest, rate limit, model allow-list, scopes."""

    id: str
    digest: bytes
    rate_per_second: float | None = None
    burst: float = 1.0
    # None: every model.
    models: frozenset[str] | None = None
    scopes: frozenset[str] = ALL_SCOPES
    # The key's explanation budget (services.gateway.evaluations); None: the gateway's.
    explain_evaluations_per_second: float | None = None
    explain_evaluations_burst: float | None = None

    def allows(self, model: str) -> bool:
        """Whether the allow-list lets this key see `model` ("" is no model, so not)."""
        return self.models is None or model in self.models

    def __repr__(self) -> str:
        return f"ApiKey(id={self.id!r})"


# A key's two buckets: its requests and its explanation evaluations.
Bucket = Literal["requests", "evaluations"]


class TokenBucket:
    """`rate` tokens per second, holding at most `burst`; starts full."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.updated = now

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Spend `cost` tokens if there are that many."""
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
        self.updated = now
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False

    def give(self, now: float, amount: float) -> None:
        """Give back `amount` tokens, up to the burst."""
        self.take(now, 0.0)  # refill to now first
        self.tokens = min(self.burst, self.tokens + amount)


# (key id, which bucket, rate, burst, now) -> the bucket: a worker's own by default, or
# one every worker of a supervisor shares (services.gateway.worker_limits).
BucketFactory = Callable[[str, Bucket, float, float, float], TokenBucket]


def own_bucket(key_id: str, which: Bucket, rate: float, burst: float, now: float) -> TokenBucket:
    """A bucket of this process alone."""
    return TokenBucket(rate, burst, now)


class KeyTable:
    """The configured keys and their rate-limit buckets: the replica's own, and the
    shared ones in Redis when `shared` is set."""

    def __init__(
        self,
        keys: Sequence[ApiKey],
        clock: Callable[[], float] = time.monotonic,
        shared: SharedLimiter | None = None,
        evaluations: EvaluationRate | None = None,
        bucket: BucketFactory = own_bucket,
    ) -> None:
        self.keys = tuple(keys)
        self._clock = clock
        self.shared = shared
        now = clock()
        self._buckets = {
            k.id: bucket(k.id, "requests", k.rate_per_second, k.burst, now)
            for k in self.keys
            if k.rate_per_second is not None
        }
        rate = evaluations or EvaluationRate()
        self.evaluations = EvaluationBudget(
            {
                k.id: bucket(
                    k.id,
                    "evaluations",
                    k.explain_evaluations_per_second or rate.per_second,
                    k.explain_evaluations_burst or rate.burst,
                    now,
                )
                for k in self.keys
            },
            clock,
            shared,
        )

    def __len__(self) -> int:
        return len(self.keys)

    def authenticate(self, metadata: Sequence[tuple[str, Any]] | None) -> ApiKey:
        """The caller's key; UNAUTHENTICATED when missing or unknown."""
        token = bearer_token(metadata)
        if token is None:
            raise Unauthenticated(
                "missing API key: expected 'authorization: Bearer <key>' metadata"
            )
        key = match_digest(self.keys, token, lambda k: k.digest)
        if key is None:
            raise Unauthenticated("invalid API key")
        return key

    async def admit(self, key: ApiKey, model: str) -> None:
        """Check the model allow-list, then take one token from the key's bucket.

        An empty name passes only a key without an allow-list: a key limited to some
        models must name one (calls about every model filter their answer instead)."""
        if not key.allows(model):
            if not model:
                raise PermissionDenied(
                    f"API key '{key.id}' may use only the models it lists: name one"
                )
            raise PermissionDenied(f"API key '{key.id}' may not use model {_short(model)}")
        await self.charge(key)

    async def charge(self, key: ApiKey) -> None:
        """Take one token from the key's bucket; RESOURCE_EXHAUSTED when empty.

        With Redis the shared bucket decides (one round trip); the replica's own bucket
        only when Redis fails and the policy is fail-open (fail-closed: UNAVAILABLE)."""
        bucket = self._buckets.get(key.id)
        if bucket is None:
            return
        if self.shared is not None:
            taken = await self.shared.take(key.id, bucket.rate, bucket.burst)
            if taken is not None:
                if not taken.taken:
                    raise self._over(key, bucket, taken.retry_after(bucket.rate))
                return
        if not bucket.take(self._clock()):
            raise self._over(key, bucket, (1.0 - bucket.tokens) / bucket.rate)

    @staticmethod
    def _over(key: ApiKey, bucket: TokenBucket, retry_after: float) -> ResourceExhausted:
        return ResourceExhausted(
            f"API key '{key.id}' is over its rate limit of {bucket.rate:g} requests/s",
            retry_after=retry_after,
        )


def authorize(key: ApiKey, method: str) -> None:
    """PERMISSION_DENIED unless the key has the scope `method` needs."""
    scope = scope_of(method)
    if scope is not None and scope not in key.scopes:
        held = ", ".join(sorted(key.scopes)) or "none"
        raise PermissionDenied(
            f"API key '{key.id}' lacks the '{scope}' scope that {method} needs (its scopes: {held})"
        )


class StreamSlots:
    """Open ModelStreamInfer calls per key, at most `limit` each.

    Only keys with a stream open have an entry, and keys are configured, so the state
    is bounded by the keys file whatever clients do."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        self.limit = limit
        self._open: dict[str, int] = {}

    def open(self, key_id: str) -> int:
        """How many streams the key has open now."""
        return self._open.get(key_id, 0)

    @contextlib.contextmanager
    def hold(self, key: ApiKey | None) -> Iterator[None]:
        """One slot for the length of a stream, however it ends; RESOURCE_EXHAUSTED when
        the key already has `limit` open. Without auth (no key) there is no per-key cap."""
        if key is None:
            yield
            return
        count = self._open.get(key.id, 0)
        if count >= self.limit:
            raise ResourceExhausted(
                f"API key '{key.id}' has {count} ModelStreamInfer streams open: at most "
                f"{self.limit} at once (max_streams_per_key)"
            )
        self._open[key.id] = count + 1
        try:
            yield
        finally:
            left = self._open.get(key.id, 1) - 1
            if left > 0:
                self._open[key.id] = left
            else:
                self._open.pop(key.id, None)


def _short(name: str) -> str:
    """A client's model name for an error message: quoted, and cut when long."""
    return repr(name) if len(name) <= 64 else f"{name[:64]!r}..."


def _number(entry: dict[str, Any], name: str, where: str) -> float | None:
    value = entry.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"{where}: {name} must be a number > 0, got {value!r}")
    return float(value)


def parse_key(entry: dict[str, Any], where: str, default_id: str) -> ApiKey:
    """One entry of a keys file."""
    ident = str(entry.get("id") or entry.get("name") or default_id)
    digest = entry_digest(entry, where, "key")
    rate = _number(entry, "rate_per_second", where)
    burst = _number(entry, "burst", where)
    models = entry.get("models")
    if models is not None and (
        not isinstance(models, list) or not all(isinstance(m, str) for m in models)
    ):
        raise ValueError(f"{where}: models must be a list of model names")
    scopes = parse_scopes(entry.get("scopes"), where)
    explain_rate = _number(entry, "explain_evaluations_per_second", where)
    explain_burst = _number(entry, "explain_evaluations_burst", where)
    return ApiKey(
        id=ident,
        digest=digest,
        rate_per_second=rate,
        burst=burst if burst is not None else max(rate or 1.0, 1.0),
        models=frozenset(models) if models is not None else None,
        scopes=scopes,
        explain_evaluations_per_second=explain_rate,
        explain_evaluations_burst=explain_burst,
    )


def parse_keys(data: Any, *, source: str) -> list[ApiKey]:
    """Keys from a parsed keys file: {keys: [...]}."""
    keys = [
        parse_key(entry, where, f"key-{i}")
        for i, where, entry in file_entries(data, "keys", source=source)
    ]
    ids = [k.id for k in keys]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{source}: key ids must be unique")
    return keys


def parse_env_keys(text: str) -> list[ApiKey]:
    """Keys from a comma-separated 'key' or 'id:key' list, without limits."""
    keys = []
    for i, item in enumerate(p.strip() for p in text.split(",")):
        if not item:
            continue
        ident, sep, secret = item.partition(":")
        if not sep:
            ident, secret = f"env-{i}", item
        keys.append(parse_key({"id": ident, "key": secret}, f"api_keys[{i}]", f"env-{i}"))
    return keys


def load_keys(
    path: str | None,
    env_keys: str | None,
    shared: SharedLimiter | None = None,
    evaluations: EvaluationRate | None = None,
    bucket: BucketFactory = own_bucket,
) -> KeyTable:
    """Keys from the keys file and the API-keys setting: their buckets in Redis through
    `shared` when given, and made by `bucket` (this process's own, or its workers')
    otherwise and for fail-open's fallback; explanation budgets at `evaluations`
    unless a key sets its own."""
    keys: list[ApiKey] = []
    if path:
        keys += parse_keys(yaml.safe_load(Path(path).read_text()), source=path)
    if env_keys:
        keys += parse_env_keys(env_keys)
    return KeyTable(keys, shared=shared, evaluations=evaluations, bucket=bucket)
