"""Version numbers and selectors written as text: one rule for every service and front end."""

from __future__ import annotations

import re

from services.common.errors import InvalidArgument
from services.common.names import echo, too_long

# Canonical ASCII decimals only, and within SQLite's and protobuf's int64: str.isdigit
# also takes '²' (which int() refuses) and other scripts' digits (which it reads).
VERSION_NUMBER = re.compile(r"[1-9][0-9]{0,17}")
# A selector is a number, an alias (the registry's are at most 63 characters), 'latest'
# or empty; the cap keeps a client's selector out of long error messages and metadata.
MAX_SELECTOR = 64
SELECTOR = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{MAX_SELECTOR - 1}}}")


def is_number(text: str) -> bool:
    """Whether `text` is a version number in canonical form ('3', never '03' or '³')."""
    return VERSION_NUMBER.fullmatch(text) is not None


def parse_number(text: str, *, what: str = "version") -> int | None:
    """The version number `text` spells, or None when it names no number (an alias,
    'latest', ''); InvalidArgument for digits that are not a canonical number."""
    if VERSION_NUMBER.fullmatch(text):
        return int(text)
    if text.isdigit():
        raise InvalidArgument(
            f"invalid {what} {echo(text, 40)}: expected a version number in ASCII digits, "
            "from 1 and without leading zeros, of at most 18 digits"
        )
    return None


def selector(text: str, *, what: str) -> str:
    """`text` if it can select a version ('', a canonical number, 'latest' or an alias);
    InvalidArgument naming `what` (the field or header it came in) otherwise.

    Checked where a request enters, so an unusable selector is the client's error
    before any lookup, whatever the routes or the backends would make of it.
    """
    if not text:
        return text
    if len(text) > MAX_SELECTOR:
        raise too_long(what, text, MAX_SELECTOR)
    parse_number(text, what=what)
    if not SELECTOR.fullmatch(text):
        raise InvalidArgument(
            f"invalid {what} {echo(text)}: expected a version number, an alias, 'latest' "
            f"or empty (ASCII letters, digits, '_', '.', '-'; at most {MAX_SELECTOR} characters)"
        )
    return text
