"""The gateway's API keys and its shared rate limiter, built from its settings."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from services.gateway.auth import KeyTable, load_keys, own_bucket
from services.gateway.evaluations import EvaluationRate
from services.gateway.metrics import GatewayMetrics
from services.gateway.settings import GatewaySettings
from services.gateway.worker_limits import WorkerTable

if TYPE_CHECKING:  # redis is an optional extra: imported only when configured
    from services.gateway.limiter import SharedLimiter

_log = logging.getLogger(__name__)


def make_limiter(settings: GatewaySettings, metrics: GatewayMetrics) -> SharedLimiter | None:
    """The rate limiter shared through Redis, or None without a Redis URL."""
    url = settings.secret("rate_limit_redis_url")
    if not url:
        return None
    try:
        from services.gateway.limiter import RedisBuckets, SharedLimiter
    except ImportError:
        raise ValueError(
            "rate_limit_redis_url needs the Redis client: install maas with the 'redis' extra"
        ) from None
    buckets = RedisBuckets(
        url, timeout=settings.rate_limit_redis_timeout_seconds, ca_file=settings.tls_ca
    )
    policy = settings.rate_limit_redis_policy
    _log.info("rate limits shared through Redis", extra={"redis": buckets.url, "policy": policy})
    return SharedLimiter(buckets, policy, on_error=metrics.redis_errors.inc)


def make_keys(
    settings: GatewaySettings,
    limiter: SharedLimiter | None = None,
    limits: WorkerTable | None = None,
) -> KeyTable | None:
    """The API keys, or None with --no-auth; no keys at all is a configuration error.
    With `limits` (one of a supervisor's workers) their buckets hold for every worker."""
    if settings.no_auth:
        _log.warning("authentication is disabled (--no-auth): anyone may call the gateway")
        return None
    evaluations = EvaluationRate(
        settings.explain_evaluations_per_second, settings.explain_evaluations_burst
    )
    bucket = limits.bucket if limits is not None else own_bucket
    keys = load_keys(
        settings.api_keys_file, settings.secret("api_keys"), limiter, evaluations, bucket
    )
    if not len(keys):
        raise ValueError(
            "no API keys configured: pass --api-keys-file, set MAAS_GATEWAY_API_KEYS, "
            "or pass --no-auth"
        )
    return keys
