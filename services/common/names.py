"""Model names as clients send them: one rule for every front end, and safe echoes.

A name is checked where a request enters, before it costs a registry call or a
backend call, and before it is echoed: an error message goes back in the status
trailer, so a client string is echoed only when short (a 64 KB name echoed whole
once made inference's reply overflow gRPC's metadata limit).

The rule is the widest a v2 server is asked to serve: a model repository's
directory names (Triton allows upper case). The registry keeps a stricter rule
of its own for the names it creates (services.registry.names).
"""

from __future__ import annotations

import re

from services.common.errors import InvalidArgument

MAX_NAME = 128
MODEL_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{MAX_NAME - 1}}}")
ECHO_LIMIT = 64


def echo(text: str, limit: int = ECHO_LIMIT) -> str:
    """`text` quoted for an error message: whole when short, else its first `limit`
    characters and its length."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def too_long(what: str, text: str, limit: int) -> InvalidArgument:
    """The error for a client string over `limit` characters."""
    return InvalidArgument(
        f"{what} {echo(text)} is too long: expected at most {limit} characters, got {len(text)}"
    )


def model_name(name: str, *, what: str = "model name") -> str:
    """`name` if it follows the model-name rule; InvalidArgument naming the rule otherwise."""
    if len(name) > MAX_NAME:
        raise too_long(what, name, MAX_NAME)
    if not MODEL_NAME.fullmatch(name):
        raise InvalidArgument(
            f"invalid {what} {echo(name)}: expected a letter or digit, then letters, "
            f"digits, '_', '.' or '-' (ASCII, at most {MAX_NAME} characters)"
        )
    return name
