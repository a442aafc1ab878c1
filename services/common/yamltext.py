"""YAML text from clients and files, read safely: every way it can fail is InvalidArgument."""

from __future__ import annotations

from typing import Any

import yaml

from services.common.errors import InvalidArgument

# yaml.safe_load raises these from its constructors as well as YAMLError: ValueError
# for '!!int x', IndexError for "{!!float ''}", AttributeError for '!!timestamp x';
# RecursionError for a few hundred nested brackets.
_LOAD_ERRORS = (yaml.YAMLError, ValueError, IndexError, AttributeError, TypeError, RecursionError)
# Enough for any serving config; deeper text is refused before the parser recurses.
MAX_DEPTH = 64


def load_mapping(text: str, *, source: str) -> dict[str, Any]:
    """The mapping YAML `text` holds ({} for empty text or null), else InvalidArgument
    naming `source` and what was wrong."""
    if not text.strip():
        return {}
    depth = _bracket_depth(text)
    if depth > MAX_DEPTH:
        raise InvalidArgument(
            f"{source}: not valid YAML: nested {depth} levels deep, expected at most {MAX_DEPTH}"
        )
    try:
        data = yaml.safe_load(text)
    except _LOAD_ERRORS as exc:
        detail = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise InvalidArgument(f"{source}: not valid YAML: {detail}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidArgument(
            f"{source}: expected a YAML mapping (dynamic_batching, instances, providers, ...), "
            f"got {type(data).__name__}"
        )
    return data


def _bracket_depth(text: str) -> int:
    """The deepest nesting of flow brackets: a cheap bound on the parser's recursion."""
    depth = deepest = 0
    for char in text:
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth = max(depth - 1, 0)
    return deepest
