"""Version numbers and selectors as text: canonical ASCII decimals only, bounded selectors."""

from __future__ import annotations

import pytest

from services.common import versions
from services.common.errors import InvalidArgument


@pytest.mark.parametrize("text", ["1", "9", "10", "123456789012345678"])
def test_canonical_numbers(text: str) -> None:
    assert versions.is_number(text)
    assert versions.parse_number(text) == int(text)


@pytest.mark.parametrize("text", ["01", "0", "١", "²", "১", "1" * 19, "1" * 5000])
def test_digits_that_are_not_canonical_numbers_are_refused(text: str) -> None:
    # Issue 11, item 16: '01' and '١' (Arabic-Indic one) once resolved to version 1.
    assert not versions.is_number(text)
    with pytest.raises(InvalidArgument, match="expected a version number in ASCII digits"):
        versions.parse_number(text)


@pytest.mark.parametrize("text", ["", "latest", "production", "v1", "1a", "-1"])
def test_non_numbers_name_no_number(text: str) -> None:
    assert not versions.is_number(text)
    assert versions.parse_number(text) is None


def test_parse_number_names_the_field_and_echoes_long_text_truncated() -> None:
    with pytest.raises(InvalidArgument, match="invalid model_version '01'") as caught:
        versions.parse_number("01", what="model_version")
    with pytest.raises(InvalidArgument) as caught:
        versions.parse_number("1" * 5000)
    assert len(caught.value.message) < 200 and "5000 characters" in caught.value.message


@pytest.mark.parametrize("text", ["", "1", "latest", "production", "Canary-2", "a" * 64])
def test_selectors_that_pass(text: str) -> None:
    assert versions.selector(text, what="model_version") == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1" * 5000, "x-maas-version header '1111.* is too long: expected at most 64 characters"),
        ("a" * 65, "expected at most 64 characters, got 65"),
        ("²", "invalid x-maas-version header '²': expected a version number in ASCII digits"),
        ("01", "invalid x-maas-version header '01'"),
        ("١", "invalid x-maas-version header '١'"),
        (" 1", "expected a version number, an alias, 'latest' or empty"),
        ("a\0b", "expected a version number, an alias"),
    ],
)
def test_selectors_that_are_refused_name_the_field(text: str, expected: str) -> None:
    with pytest.raises(InvalidArgument, match=expected) as caught:
        versions.selector(text, what="x-maas-version header")
    assert len(caught.value.message) < 300
