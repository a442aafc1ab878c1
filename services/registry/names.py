"""Checks on names, file paths, version selectors and page tokens."""

from __future__ import annotations

import base64
import binascii
import posixpath
import re
from dataclasses import dataclass

from services.common.errors import InvalidArgument
from services.common.names import echo
from services.common.versions import parse_number
from services.registry.domain import MAIN_FILE

MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,127}$")
ALIAS_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
LABEL_KEY = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_./-]{0,127}$")
FILE_PATH = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+){0,7}$")
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
LATEST = "latest"
DEFAULT_ALIAS = "production"
MAX_DESCRIPTION = 4096
MAX_LABEL_VALUE = 1024
MAX_LABELS = 64
MAX_CONFIG = 64 * 1024
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def model_name(name: str) -> str:
    """`name` if it is a valid model name; InvalidArgument otherwise."""
    if not MODEL_NAME.fullmatch(name):
        raise InvalidArgument(
            f"invalid model name {echo(name)}: expected {MODEL_NAME.pattern} "
            "(lowercase letters, digits, '_', '.', '-'; at most 128 characters)"
        )
    return name


def alias_name(alias: str) -> str:
    """`alias` if it is a valid alias name; InvalidArgument otherwise."""
    if alias == LATEST:
        raise InvalidArgument(f"invalid alias {alias!r}: 'latest' is reserved")
    if not ALIAS_NAME.fullmatch(alias):
        raise InvalidArgument(
            f"invalid alias {alias!r}: expected {ALIAS_NAME.pattern} "
            "(starts with a lowercase letter, never purely numeric)"
        )
    return alias


def version_number(version: int) -> int:
    """`version` if it is a valid version number (>= 1)."""
    if version < 1:
        raise InvalidArgument(f"invalid version {version}: expected a number >= 1")
    return version


def description(text: str) -> str:
    """`text` if it is short enough for a description."""
    if len(text) > MAX_DESCRIPTION:
        raise InvalidArgument(
            f"description is {len(text)} characters, expected at most {MAX_DESCRIPTION}"
        )
    return text


def labels(values: dict[str, str]) -> dict[str, str]:
    """A copy of `values` if every key and value is acceptable."""
    if len(values) > MAX_LABELS:
        raise InvalidArgument(f"{len(values)} labels, expected at most {MAX_LABELS}")
    for key, value in values.items():
        if not LABEL_KEY.fullmatch(key):
            raise InvalidArgument(f"invalid label key {key!r}: expected {LABEL_KEY.pattern}")
        if len(value) > MAX_LABEL_VALUE:
            raise InvalidArgument(
                f"label {key!r} is {len(value)} characters, expected at most {MAX_LABEL_VALUE}"
            )
    return dict(values)


def sha256_hex(value: str, *, what: str) -> str:
    """`value` lowercased if it is 64 hex digits."""
    lowered = value.lower()
    if not SHA256_HEX.fullmatch(lowered):
        raise InvalidArgument(f"{what}: sha256 must be 64 hex digits, got {value!r}")
    return lowered


def file_path(path: str) -> str:
    """A file path inside a version: relative, normalized, no '..' (MAIN_FILE if empty)."""
    if not path:
        return MAIN_FILE
    if (
        not FILE_PATH.fullmatch(path)
        or posixpath.normpath(path) != path
        or any(part in (".", "..") for part in path.split("/"))
    ):
        raise InvalidArgument(
            f"invalid file path {path!r}: expected a normalized relative path of "
            "letters, digits, '_', '.', '-' and '/', without '..'"
        )
    return path


@dataclass(frozen=True)
class Selector:
    """A version selector: exactly one of a number, an alias, or latest/default."""

    number: int = 0
    alias: str = ""
    latest: bool = False

    @property
    def is_default(self) -> bool:
        """Empty selector: `production` if set, else latest."""
        return not (self.number or self.alias or self.latest)

    def __str__(self) -> str:
        if self.number:
            return str(self.number)
        if self.alias:
            return self.alias
        return LATEST if self.latest else ""


def selector(text: str) -> Selector:
    """Parse a version selector: '3', 'production', 'latest' or ''."""
    text = text.strip()
    if not text:
        return Selector()
    if text == LATEST:
        return Selector(latest=True)
    number = parse_number(text)
    if number is not None:
        return Selector(number=version_number(number))
    if not ALIAS_NAME.fullmatch(text):
        raise InvalidArgument(
            f"invalid version {text!r}: expected a version number, an alias, 'latest' or empty"
        )
    return Selector(alias=text)


def page_size(size: int) -> int:
    """The page size to use: the default for 0, capped at the maximum."""
    if size < 0:
        raise InvalidArgument(f"page_size {size} is negative, expected >= 0")
    return min(size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_page_token(kind: str, after: str) -> str:
    """An opaque token meaning "continue after `after`" in a `kind` listing."""
    return base64.urlsafe_b64encode(f"{kind}:{after}".encode()).decode().rstrip("=")


def decode_page_token(kind: str, token: str) -> str | None:
    """The key a token continues after; None for an empty token."""
    if not token:
        return None
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    prefix = f"{kind}:"
    if not text.startswith(prefix):
        raise InvalidArgument(f"invalid page_token {token!r}: not from a {kind} listing")
    return text[len(prefix) :]
