"""Version numbers written as text: one rule for every service and every front end."""

from __future__ import annotations

import re

from services.common.errors import InvalidArgument

# Canonical ASCII decimals only, and within SQLite's and protobuf's int64: str.isdigit
# also takes '²' (which int() refuses) and other scripts' digits (which it reads).
VERSION_NUMBER = re.compile(r"[1-9][0-9]{0,17}")


def is_number(text: str) -> bool:
    """Whether `text` is a version number in canonical form ('3', never '03' or '³')."""
    return VERSION_NUMBER.fullmatch(text) is not None


def parse_number(text: str) -> int | None:
    """The version number `text` spells, or None when it names no number (an alias,
    'latest', ''); InvalidArgument for digits that are not a canonical number."""
    if VERSION_NUMBER.fullmatch(text):
        return int(text)
    if text.isdigit():
        raise InvalidArgument(
            f"invalid version {text[:40]!r}: expected a version number in ASCII digits, "
            "from 1 and without leading zeros, of at most 18 digits"
        )
    return None
