"""API keys: who may call, which models, and how often.

Keys come from a YAML file (`keys: [{id, sha256 | key, rate_per_second, burst,
models}]`; plain `key:` entries are hashed at load) or from the
MAAS_GATEWAY_API_KEYS setting. Only sha256 digests are kept, compared in
constant time; the key itself is never logged, and errors name the key's id.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from services.common.errors import PermissionDenied, ResourceExhausted, Unauthenticated
from services.common.tokens import bearer_token, hash_token, match_digest

SHA256_HEX_DIGITS = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class ApiKey:
    """A configured key: id (safe to log), digest, rate limit and model allow-list."""

    id: str
    digest: bytes
    rate_per_second: float | None = None
    burst: float = 1.0
    # None: every model.
    models: frozenset[str] | None = None

    def __repr__(self) -> str:
        return f"ApiKey(id={self.id!r})"


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


class KeyTable:
    """The configured keys and their rate-limit buckets."""

    def __init__(self, keys: Sequence[ApiKey], clock: Callable[[], float] = time.monotonic) -> None:
        self.keys = tuple(keys)
        self._clock = clock
        now = clock()
        self._buckets = {
            k.id: TokenBucket(k.rate_per_second, k.burst, now)
            for k in self.keys
            if k.rate_per_second is not None
        }

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

    def admit(self, key: ApiKey, model: str) -> None:
        """Check the model allow-list, then take one token from the key's bucket."""
        if key.models is not None and model and model not in key.models:
            raise PermissionDenied(f"API key '{key.id}' may not use model '{model}'")
        self.charge(key)

    def charge(self, key: ApiKey) -> None:
        """Take one token from the key's bucket; RESOURCE_EXHAUSTED when empty."""
        bucket = self._buckets.get(key.id)
        if bucket is not None and not bucket.take(self._clock()):
            raise ResourceExhausted(
                f"API key '{key.id}' is over its rate limit of {bucket.rate:g} requests/s"
            )


def _number(entry: dict[str, Any], name: str, where: str) -> float | None:
    value = entry.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"{where}: {name} must be a number > 0, got {value!r}")
    return float(value)


def parse_key(entry: Any, where: str, default_id: str) -> ApiKey:
    """One entry of a keys file."""
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(entry).__name__}")
    ident = str(entry.get("id") or entry.get("name") or default_id)
    if "sha256" in entry:
        hexdigest = str(entry["sha256"]).lower()
        if len(hexdigest) != 64 or not set(hexdigest) <= SHA256_HEX_DIGITS:
            raise ValueError(f"{where}: sha256 must be 64 hex digits")
    elif entry.get("key"):
        hexdigest = hash_token(str(entry["key"]))
    else:
        raise ValueError(f"{where}: expected 'sha256' (hex digest of the key) or 'key'")
    rate = _number(entry, "rate_per_second", where)
    burst = _number(entry, "burst", where)
    models = entry.get("models")
    if models is not None and (
        not isinstance(models, list) or not all(isinstance(m, str) for m in models)
    ):
        raise ValueError(f"{where}: models must be a list of model names")
    return ApiKey(
        id=ident,
        digest=bytes.fromhex(hexdigest),
        rate_per_second=rate,
        burst=burst if burst is not None else max(rate or 1.0, 1.0),
        models=frozenset(models) if models is not None else None,
    )


def parse_keys(data: Any, *, source: str) -> list[ApiKey]:
    """Keys from a parsed keys file: {keys: [...]}."""
    entries = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f"{source}: expected a mapping with a 'keys' list")
    keys = [parse_key(e, f"{source}: keys[{i}]", f"key-{i}") for i, e in enumerate(entries)]
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


def load_keys(path: str | None, env_keys: str | None) -> KeyTable:
    """Keys from the keys file and the API-keys setting."""
    keys: list[ApiKey] = []
    if path:
        keys += parse_keys(yaml.safe_load(Path(path).read_text()), source=path)
    if env_keys:
        keys += parse_env_keys(env_keys)
    return KeyTable(keys)
