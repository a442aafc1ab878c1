"""A method's parameters read from the request's v2 parameters, named when wrong."""

from __future__ import annotations

from collections.abc import Mapping

from services.common.errors import InvalidArgument


def int_param(
    params: Mapping[str, object], name: str, default: int | None, *, minimum: int | None = None
) -> int | None:
    """An int64 parameter (or `default` when absent), at least `minimum`."""
    value = params.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        got = _kind(value)
        raise InvalidArgument(f"parameters.{name}: expected an int64 parameter, got {got}")
    if minimum is not None and value < minimum:
        raise InvalidArgument(f"parameters.{name}: {value}, expected at least {minimum}")
    return value


def float_param(params: Mapping[str, object], name: str, default: float) -> float:
    """A double (or int64) parameter, or `default` when absent; finite."""
    value = params.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        got = _kind(value)
        raise InvalidArgument(f"parameters.{name}: expected a double parameter, got {got}")
    number = float(value)
    if number != number or number in (float("inf"), float("-inf")):
        raise InvalidArgument(f"parameters.{name}: {number}, expected a finite number")
    return number


def _kind(value: object) -> str:
    """What a v2 parameter holds, for an error message (never the value: it is client text)."""
    if isinstance(value, bool):
        return "a bool"
    if isinstance(value, str):
        return "a string"
    return "a double" if isinstance(value, float) else f"a {type(value).__name__}"
