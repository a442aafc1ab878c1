"""Rate-limit buckets shared by every gateway replica, kept in Redis.

Each API key with a rate has one token bucket in Redis (`maas:rl:<key id>`: only
configured ids, so the keyspace is bounded by the keys file, never by clients), and
each key one bucket of explanation evaluations (`maas:ev:<key id>`,
services.gateway.evaluations). One
Lua script refills it by the time elapsed on Redis' own clock (TIME), so the
replicas' clocks do not matter, takes a token or refuses, and sets a TTL of about
twice the time the bucket takes to fill (an expired bucket is a full one). That is
one round trip per request, atomic across replicas.

When Redis fails (unreachable, too slow for the socket timeout, an error reply),
the policy decides: `fail-open` falls back to each replica's own bucket
(services.gateway.auth.TokenBucket) and `fail-closed` refuses with UNAVAILABLE.
After a failure Redis is left alone for `retry_seconds`, so a hung Redis costs one
timeout per period rather than one per request; then the next request tries it
again, which is how the shared limit comes back on its own.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, get_args
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from services.common.errors import Unavailable
from services.gateway.settings import RateLimitPolicy as Policy

_log = logging.getLogger(__name__)

POLICIES: tuple[str, ...] = get_args(Policy)
DEFAULT_POLICY: Policy = "fail-open"
KEY_PREFIX = "maas:rl:"
SCHEMES = ("redis", "rediss", "unix")
# A hung Redis must not stall requests: a call waits at most about this long.
DEFAULT_TIMEOUT_SECONDS = 0.25
# How long Redis is left alone after a failure before a request tries it again.
DEFAULT_RETRY_SECONDS = 1.0
# The warning about Redis failing is logged at most this often.
WARN_EVERY_SECONDS = 60.0

# KEYS[1] the bucket; ARGV rate (tokens/s), burst, cost. Returns {taken 0|1, tokens left}
# (a negative cost gives tokens back, up to the burst)
# (tokens as a string: Redis would truncate a Lua number to an integer). Times are in
# microseconds, written with %.17g so that nothing is lost to Lua's %.14g tostring.
TAKE_SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens = tonumber(state[1])
local updated = tonumber(state[2])
if tokens == nil or updated == nil then
  tokens = burst
  updated = now
end
tokens = math.min(burst, tokens + math.max(0, now - updated) * rate / 1000000)
local taken = 0
if tokens >= cost then
  tokens = math.min(burst, tokens - cost)
  taken = 1
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
  'updated', string.format('%.17g', now))
redis.call('PEXPIRE', KEYS[1], math.ceil(2000 * burst / rate) + 1000)
return {taken, string.format('%.17g', tokens)}
"""


@dataclass(frozen=True)
class Taken:
    """One answer of a bucket: whether the token was taken, and the tokens left."""

    taken: bool
    tokens: float

    def retry_after(self, rate: float, cost: float = 1.0) -> float:
        """Seconds until `cost` tokens are there again."""
        return max(0.0, cost - self.tokens) / rate


def bucket_name(key_id: str, prefix: str = KEY_PREFIX) -> str:
    """The Redis key of an API key's bucket (key ids come from configuration only)."""
    return prefix + key_id


def redact(url: str) -> str:
    """The URL with any password replaced, fit for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


class RedisBuckets:
    """Token buckets in Redis, through one pooled asyncio client; errors are raised.

    `ca_file` verifies a rediss:// server when the URL names no ?ssl_ca_certs=."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        max_connections: int = 64,
        ca_file: str | None = None,
    ) -> None:
        scheme = urlsplit(url).scheme.lower()
        if scheme not in SCHEMES:
            # Not the URL itself: it may hold a password.
            raise ValueError(
                f"rate_limit_redis_url must be a redis://, rediss:// or unix:// URL, "
                f"got a {scheme[:16]!r} one"
            )
        self.url = redact(url)
        options: dict[str, Any] = {}
        if ca_file and urlsplit(url).scheme == "rediss":
            options["ssl_ca_certs"] = ca_file  # the URL's ?ssl_ca_certs= wins
        # No retries inside redis-py: the policy, not a loop of reconnects, decides.
        self._pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            **options,
        )
        self._client = Redis(connection_pool=self._pool)
        self._take = self._client.register_script(TAKE_SCRIPT)

    async def take(
        self,
        key_id: str,
        rate: float,
        burst: float,
        cost: float = 1.0,
        prefix: str = KEY_PREFIX,
    ) -> Taken:
        """Take `cost` tokens from the key's bucket if it has them, or give -cost back
        (EVALSHA, EVAL once when Redis does not have the script yet)."""
        reply = await self._take(keys=[bucket_name(key_id, prefix)], args=[rate, burst, cost])
        taken, tokens = reply
        return Taken(bool(int(taken)), float(tokens))

    async def close(self) -> None:
        await self._client.aclose()
        await self._pool.aclose()


class SharedLimiter:
    """Redis buckets under a policy for when Redis fails: `take` answers from Redis,
    or None to use the replica's own bucket (fail-open), or raises UNAVAILABLE
    (fail-closed)."""

    def __init__(
        self,
        buckets: RedisBuckets,
        policy: Policy = DEFAULT_POLICY,
        *,
        on_error: Callable[[], None] = lambda: None,
        retry_seconds: float = DEFAULT_RETRY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown policy {policy!r}: expected one of {', '.join(POLICIES)}")
        self.buckets = buckets
        self.policy = policy
        self.on_error = on_error
        self.retry_seconds = retry_seconds
        self._clock = clock
        self._skip_until = -math.inf
        self._warned = -math.inf
        self._failing = False

    @property
    def healthy(self) -> bool:
        """Whether Redis answered the last time it was asked (or was never asked)."""
        return not self._failing

    async def take(
        self,
        key_id: str,
        rate: float,
        burst: float,
        cost: float = 1.0,
        prefix: str = KEY_PREFIX,
    ) -> Taken | None:
        """The shared bucket's answer, or None when the replica's own bucket decides."""
        if self._clock() >= self._skip_until:
            try:
                taken = await self.buckets.take(key_id, rate, burst, cost, prefix)
            except (RedisError, OSError) as exc:
                self._failed(exc)
            else:
                if self._failing:
                    self._failing = False
                    _log.info(
                        "rate limiter: Redis answers again", extra={"redis": self.buckets.url}
                    )
                return taken
        if self.policy == "fail-closed":
            raise Unavailable("the rate limiter (Redis) is unreachable: try again shortly")
        return None

    def _failed(self, exc: BaseException) -> None:
        now = self._clock()
        self._failing = True
        self._skip_until = now + self.retry_seconds
        self.on_error()
        if now - self._warned >= WARN_EVERY_SECONDS:
            self._warned = now
            fallback = (
                "each replica applies its own limits"
                if self.policy == "fail-open"
                else "requests with a rate limit are refused"
            )
            _log.warning(
                f"rate limiter: Redis failed ({_reason(exc)}); {fallback} until it answers "
                "again (logged at most once a minute)",
                extra={"redis": self.buckets.url, "policy": self.policy},
            )

    async def close(self) -> None:
        await self.buckets.close()


def _reason(exc: BaseException) -> str:
    """A short reason for the log: the error's class and the start of its message."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__
