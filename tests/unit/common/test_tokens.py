"""bearer_token: the scheme in any case (RFC 7235), and a bound on the token's length."""

from __future__ import annotations

import pytest

from services.common.errors import Unauthenticated
from services.common.tokens import MAX_TOKEN_BYTES, bearer_token


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_the_scheme_is_case_insensitive(scheme: str) -> None:
    assert bearer_token([("authorization", f"{scheme} tok")]) == "tok"


def test_binary_values_and_other_schemes() -> None:
    assert bearer_token([("authorization", b"Bearer tok")]) == "tok"
    assert bearer_token([("authorization", "Basic dXNlcg=="), ("authorization", "Bearer b")]) == "b"
    assert bearer_token([("authorization", "Basic dXNlcg==")]) is None


def test_a_token_at_the_limit_is_returned() -> None:
    token = "t" * MAX_TOKEN_BYTES
    assert bearer_token([("authorization", f"Bearer {token}")]) == token


def test_a_longer_token_is_unauthenticated_naming_the_limit() -> None:
    with pytest.raises(Unauthenticated) as caught:
        bearer_token([("authorization", "Bearer " + "t" * (MAX_TOKEN_BYTES + 1))])
    assert caught.value.message == (
        f"bearer token too long: expected at most {MAX_TOKEN_BYTES} bytes, "
        f"got {MAX_TOKEN_BYTES + 1}"
    )


def test_the_limit_counts_bytes_not_characters() -> None:
    with pytest.raises(Unauthenticated):
        bearer_token([("authorization", "Bearer " + "é" * (MAX_TOKEN_BYTES // 2 + 1))])
