"""The shared model-name rule and the echo of client strings in error messages."""

from __future__ import annotations

import pytest

from services.common import names
from services.common.errors import InvalidArgument


def test_short_text_is_echoed_whole_and_long_text_truncated() -> None:
    assert names.echo("dig\0its") == "'dig\\x00its'"
    long = names.echo("x" * 70000)
    assert long.startswith("'" + "x" * 64 + "'...") and "70000 characters" in long
    assert len(long) < 100


@pytest.mark.parametrize("name", ["digits", "Pair", "0", "a.b-c_d", "a" * 128])
def test_names_within_the_rule(name: str) -> None:
    assert names.model_name(name) == name


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("", "invalid model name ''"),
        ("digits ", "invalid model name 'digits '"),
        ("../../etc/passwd", "expected a letter or digit"),
        ("ünï", "ASCII"),
        ("a" * 129, "model name 'aaa.* is too long: expected at most 128 characters, got 129"),
    ],
)
def test_names_outside_the_rule(name: str, expected: str) -> None:
    with pytest.raises(InvalidArgument, match=expected):
        names.model_name(name)
