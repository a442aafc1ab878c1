"""API keys: loading and hashing, constant-time lookup, allow-lists, token buckets."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest

from services.common.errors import PermissionDenied, ResourceExhausted, Unauthenticated
from services.common.tokens import bearer_token, hash_token
from services.gateway.auth import KeyTable, TokenBucket, load_keys, parse_env_keys, parse_keys


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def bearer(key: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {key}")]


def test_token_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    bucket = TokenBucket(rate=2.0, burst=3.0, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert not bucket.take(0.4)  # 0.8 tokens
    assert bucket.take(0.5)  # 1.0 token
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]  # capped at burst


def test_keys_file_keeps_only_digests(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(
        "keys:\n"
        f"  - {{id: team-a, sha256: {hash_token('secret-a').upper()}, rate_per_second: 50,"
        " burst: 100, models: [digits]}\n"
        "  - {name: default, key: secret-b}\n"
    )
    table = load_keys(str(path), "ops:secret-c,secret-d")
    assert [k.id for k in table.keys] == ["team-a", "default", "ops", "env-1"]
    a = table.keys[0]
    assert a.digest == hashlib.sha256(b"secret-a").digest()
    assert (a.rate_per_second, a.burst, a.models) == (50.0, 100.0, frozenset({"digits"}))
    assert table.keys[1].digest == hashlib.sha256(b"secret-b").digest()
    assert "secret" not in repr(table.keys) and "secret" not in str(table.keys[1].__dict__["id"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("keys: nope", "expected a mapping with a 'keys' list"),
        ("keys: [{id: a}]", "expected 'sha256'"),
        ("keys: [{id: a, sha256: abc}]", "sha256 must be 64 hex digits"),
        ("keys: [{id: a, key: k, rate_per_second: 0}]", "rate_per_second must be a number > 0"),
        ("keys: [{id: a, key: k, models: digits}]", "models must be a list"),
        ("keys: [{id: a, key: k}, {id: a, key: j}]", "key ids must be unique"),
    ],
)
def test_bad_keys_files_name_the_problem(text: str, message: str) -> None:
    import yaml

    with pytest.raises(ValueError, match=message):
        parse_keys(yaml.safe_load(text), source="keys.yaml")


async def test_authenticate_and_admit() -> None:
    clock = Clock()
    keys = parse_keys(
        {
            "keys": [
                {"id": "a", "key": "key-a", "models": ["pair"]},
                {"id": "limited", "key": "key-l", "rate_per_second": 1, "burst": 2},
            ]
        },
        source="test",
    )
    table = KeyTable(keys, clock)
    with pytest.raises(Unauthenticated, match="missing API key"):
        table.authenticate([])
    with pytest.raises(Unauthenticated, match="invalid API key"):
        table.authenticate(bearer("key-x"))
    with pytest.raises(Unauthenticated):
        table.authenticate([("authorization", "Basic key-a")])
    a = table.authenticate(bearer("key-a"))
    assert a.id == "a"
    await table.admit(a, "pair")
    with pytest.raises(PermissionDenied, match="API key 'a' may not use model 'cnn'"):
        await table.admit(a, "cnn")
    limited = table.authenticate([("Authorization", b"bearer  key-l ")])
    await table.admit(limited, "anything")
    await table.admit(limited, "anything")
    with pytest.raises(ResourceExhausted, match="over its rate limit"):
        await table.admit(limited, "anything")
    clock.now += 1.0
    await table.admit(limited, "anything")


def test_env_keys_and_bearer_parsing() -> None:
    keys = parse_env_keys(" k1 , team:k2,,")
    assert [k.id for k in keys] == ["env-0", "team"]
    assert bearer_token([("x", "y"), ("authorization", "Bearer  tok ")]) == "tok"
    assert bearer_token([("authorization", "Bearer ")]) is None
    assert bearer_token(None) is None


def test_keys_never_reach_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    table = KeyTable(parse_env_keys("a:very-secret"))
    with pytest.raises(Unauthenticated) as caught:
        table.authenticate(bearer("other-secret"))
    assert "secret" not in caught.value.message
    assert "secret" not in caplog.text
