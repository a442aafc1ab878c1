"""The shared rate limiter's settings: names, flags, the policy, and a secret URL."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.gateway.main import GatewayServer, build_parser
from services.gateway.settings import GatewaySettings

URL = "redis://:pa55word@redis.maas:6379/0"


def test_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAAS_GATEWAY_RATE_LIMIT_REDIS_URL", URL)
    monkeypatch.setenv("MAAS_GATEWAY_RATE_LIMIT_REDIS_POLICY", "fail-closed")
    settings = GatewaySettings()
    assert settings.secret("rate_limit_redis_url") == URL
    assert settings.rate_limit_redis_policy == "fail-closed"
    assert settings.rate_limit_redis_timeout_seconds == 0.25
    assert "pa55word" not in repr(settings)


def test_defaults_and_flags() -> None:
    assert GatewaySettings().rate_limit_redis_url is None
    assert GatewaySettings().rate_limit_redis_policy == "fail-open"
    args = vars(
        build_parser().parse_args(
            [
                "--rate-limit-redis-url",
                "rediss://redis:6380?ssl_ca_certs=/ca.pem",
                "--rate-limit-redis-policy",
                "fail-closed",
                "--rate-limit-redis-timeout-seconds",
                "0.5",
            ]
        )
    )
    settings = GatewaySettings.from_args(args)
    assert settings.secret("rate_limit_redis_url") == "rediss://redis:6380?ssl_ca_certs=/ca.pem"
    assert settings.rate_limit_redis_policy == "fail-closed"
    assert settings.rate_limit_redis_timeout_seconds == 0.5


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"rate_limit_redis_policy": "fail-sometimes"}, "fail-open"),
        ({"rate_limit_redis_timeout_seconds": 0}, "greater than 0"),
    ],
)
def test_bad_values_name_the_problem(values: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message) as caught:
        GatewaySettings(**values)  # type: ignore[arg-type]
    assert "pa55word" not in str(caught.value)


def test_a_url_that_is_not_redis_is_a_startup_error() -> None:
    settings = GatewaySettings(
        backends="localhost:1", api_keys="a:key", rate_limit_redis_url="http://:pa55word@r:1"
    )
    with pytest.raises(ValueError, match="got a .http. one") as e:
        GatewayServer(settings)
    assert "pa55word" not in str(e.value)


async def test_a_url_without_auth_makes_no_limiter() -> None:
    server = GatewayServer(
        GatewaySettings(backends="localhost:1", no_auth=True, rate_limit_redis_url=URL)
    )
    assert server.limiter is None
    keyed = GatewayServer(
        GatewaySettings(backends="localhost:1", api_keys="a:key", rate_limit_redis_url=URL)
    )
    assert keyed.limiter is not None and keyed.limiter.policy == "fail-open"
    assert keyed.limiter.buckets.url == "redis://:***@redis.maas:6379/0"
    await keyed.limiter.close()
