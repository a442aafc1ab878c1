"""The Redis token bucket (services.gateway.limiter) against a real redis-server."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator, Iterator

import pytest

from services.common.errors import Unavailable
from services.gateway.limiter import (
    TAKE_SCRIPT,
    RedisBuckets,
    SharedLimiter,
    Taken,
    bucket_name,
    redact,
)
from tests.redisserver import RedisServer, running_redis


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with running_redis() as started:
        yield started


@pytest.fixture
async def buckets(server: RedisServer) -> AsyncIterator[RedisBuckets]:
    server.client().flushall()
    made = RedisBuckets(server.url)
    yield made
    await made.close()


def set_state(server: RedisServer, key_id: str, tokens: float, seconds_ago: float) -> None:
    """Write a bucket as it would be `seconds_ago` on Redis' clock."""
    client = server.client()
    now_s, now_us = client.time()
    updated = now_s * 1_000_000 + now_us - int(seconds_ago * 1_000_000)
    client.hset(bucket_name(key_id), mapping={"tokens": str(tokens), "updated": str(updated)})


async def test_burst_then_refused(buckets: RedisBuckets) -> None:
    # A rate of one token per 1000 s: nothing refills during the test.
    answers = [await buckets.take("team", 0.001, 3.0) for _ in range(4)]
    assert [a.taken for a in answers] == [True, True, True, False]
    assert answers[2].tokens == pytest.approx(0.0, abs=1e-3)
    assert answers[3].retry_after(0.001) == pytest.approx(1000.0, rel=1e-2)


async def test_refill_by_redis_elapsed_time(server: RedisServer, buckets: RedisBuckets) -> None:
    # Empty one second ago at 2 tokens/s: two tokens back, one taken now.
    set_state(server, "team", 0.0, 1.0)
    taken = await buckets.take("team", 2.0, 10.0)
    assert taken.taken
    assert taken.tokens == pytest.approx(1.0, abs=0.1)


async def test_refill_stops_at_burst(server: RedisServer, buckets: RedisBuckets) -> None:
    set_state(server, "team", 0.0, 1000.0)
    taken = await buckets.take("team", 5.0, 4.0)
    assert taken.taken and taken.tokens == pytest.approx(3.0)


async def test_a_short_bucket_is_refused_with_retry_after(
    server: RedisServer, buckets: RedisBuckets
) -> None:
    set_state(server, "team", 0.25, 0.0)
    taken = await buckets.take("team", 0.001, 4.0)
    assert not taken.taken
    assert taken.retry_after(0.001) == pytest.approx(750.0, rel=0.01)


async def test_a_negative_cost_gives_back_up_to_the_burst(
    server: RedisServer, buckets: RedisBuckets
) -> None:
    """What an explanation did not spend goes back (services.gateway.evaluations)."""
    assert (await buckets.take("team", 0.001, 100.0, 80.0, "maas:ev:")).taken
    back = await buckets.take("team", 0.001, 100.0, -50.0, "maas:ev:")
    assert back.taken and back.tokens == pytest.approx(70.0, abs=0.01)
    full = await buckets.take("team", 0.001, 100.0, -500.0, "maas:ev:")
    assert full.tokens == pytest.approx(100.0)  # never above the burst
    # Its own key, apart from the request rate's bucket.
    assert server.client().keys("*") == [bucket_name("team", "maas:ev:").encode()]


async def test_ttl_is_set_to_about_twice_the_fill_time(
    server: RedisServer, buckets: RedisBuckets
) -> None:
    await buckets.take("team", 10.0, 20.0)
    ttl_ms = server.client().pttl(bucket_name("team"))
    # 20 tokens at 10/s fill in 2 s: 2 * 2000 ms + 1000 ms.
    assert 4000 < ttl_ms <= 5000


async def test_two_keys_are_independent(buckets: RedisBuckets) -> None:
    assert (await buckets.take("a", 0.001, 1.0)).taken
    assert not (await buckets.take("a", 0.001, 1.0)).taken
    assert (await buckets.take("b", 0.001, 1.0)).taken


async def test_the_script_is_loaded_again_after_a_flush(
    server: RedisServer, buckets: RedisBuckets
) -> None:
    assert (await buckets.take("a", 0.001, 2.0)).taken
    server.client().script_flush()  # EVALSHA now gets NOSCRIPT: EVAL follows
    assert (await buckets.take("a", 0.001, 2.0)).taken
    sha = hashlib.sha1(TAKE_SCRIPT.encode()).hexdigest()
    assert server.client().script_exists(sha) == [True]


async def test_only_configured_ids_name_keys(server: RedisServer, buckets: RedisBuckets) -> None:
    await buckets.take("team-a", 1.0, 1.0)
    assert server.client().keys("*") == [b"maas:rl:team-a"]


def test_redact_hides_the_password() -> None:
    assert redact("redis://:s3cret@redis:6379/0") == "redis://:***@redis:6379/0"
    assert redact("rediss://user:pw@[::1]:6380/1?ssl_ca_certs=/ca.pem") == (
        "rediss://user:***@[::1]:6380/1?ssl_ca_certs=/ca.pem"
    )
    assert redact("redis://redis:6379") == "redis://redis:6379"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_policies_when_redis_stops_and_returns(caplog: pytest.LogCaptureFixture) -> None:
    with running_redis(password="hunter2-secret") as redis_server:
        errors: list[int] = []
        clock = Clock()
        opened = SharedLimiter(
            RedisBuckets(redis_server.url),
            "fail-open",
            on_error=lambda: errors.append(1),
            clock=clock,
        )
        closed = SharedLimiter(RedisBuckets(redis_server.url), "fail-closed", clock=clock)
        try:
            assert await opened.take("k", 0.001, 5.0) == Taken(True, pytest.approx(4.0))
            redis_server.stop()
            with caplog.at_level(logging.WARNING, "services.gateway.limiter"):
                assert await opened.take("k", 0.001, 5.0) is None
                # Within retry_seconds Redis is not tried again: no second error.
                assert await opened.take("k", 0.001, 5.0) is None
                assert len(errors) == 1
                clock.now += 2.0
                assert await opened.take("k", 0.001, 5.0) is None
                assert len(errors) == 2
                with pytest.raises(Unavailable, match="rate limiter"):
                    await closed.take("k", 0.001, 5.0)
            warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
            # Once a minute: the second failure, 2 s later, logged nothing more.
            assert len(warnings) == 2  # one per limiter
            assert all("hunter2-secret" not in r.getMessage() for r in caplog.records)
            assert all("hunter2-secret" not in str(r.__dict__) for r in caplog.records)
            redis_server.start()
            clock.now += 2.0
            # Redis answers again (a new, full bucket: nothing was persisted).
            assert (await opened.take("k", 0.001, 5.0) or Taken(False, 0)).taken
            assert (await closed.take("k", 0.001, 5.0) or Taken(False, 0)).taken
        finally:
            await opened.close()
            await closed.close()
