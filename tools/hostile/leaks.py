"""What a client must never read in an error: server paths, Python class names, tracebacks."""

from __future__ import annotations

import builtins
import re
from collections.abc import Iterable

# "<class 'google.protobuf.message.DecodeError'>", a traceback, or one of its frames.
MARKERS = ("<class ", "Traceback (most recent call last)", 'File "')
# Exception names as Python prints them ("KeyError: 'x'", "DecodeError"): names of
# Python's own exceptions, and CamelCase names ending in Error or Exception
# (DecodeError, ONNXRuntimeError); the word "Error" alone is fine.
_BUILTIN_EXCEPTIONS = sorted(
    name
    for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, BaseException)
)
_EXCEPTION_NAME = re.compile(
    r"\b(?:" + "|".join(_BUILTIN_EXCEPTIONS) + r"|[A-Z][A-Za-z]*(?:Error|Exception))\b"
)


def find_leaks(message: str, paths: Iterable[str] = ()) -> list[str]:
    """Why `message` leaks internals: one entry per kind found, empty when it is clean."""
    found = [f"path {p!r}" for p in paths if p and p in message]
    found += [f"marker {m!r}" for m in MARKERS if m in message]
    names = sorted(set(_EXCEPTION_NAME.findall(message)))
    found += [f"class name {n!r}" for n in names]
    return found
