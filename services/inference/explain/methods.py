"""The explanation methods by name; each is imported when first used.

Why lazily: kernel_shap needs the optional `shap` library (the 'explain' extra) and
tokens a text model's tokenizer; a server without them still serves the others.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable

from services.common.errors import InvalidArgument, Unimplemented
from services.common.names import echo
from services.inference.explain.evaluate import Evaluator
from services.inference.explain.job import ExplainJob, Explanation

Method = Callable[[ExplainJob, Evaluator], Awaitable[Explanation]]

# name -> (module, function) of the implementation.
_PATHS: dict[str, tuple[str, str]] = {
    "kernel_shap": ("services.inference.explain.kernel_shap", "explain_kernel_shap"),
    "occlusion": ("services.inference.explain.occlusion", "explain_occlusion"),
    "tokens": ("services.inference.explain.tokens", "explain_tokens"),
}


def _load(name: str) -> Method:
    module_name, function = _PATHS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise Unimplemented(f"method {name!r} is not available") from None
    found: Method = getattr(module, function)
    return found


def _lazy(name: str) -> Method:
    async def run(job: ExplainJob, evaluator: Evaluator) -> Explanation:
        return await _load(name)(job, evaluator)

    return run


METHODS: dict[str, Method] = {name: _lazy(name) for name in _PATHS}


def check_method(name: str) -> str:
    """`name` if it is a method; InvalidArgument naming the field otherwise."""
    if name not in METHODS:
        got = echo(name) if name else "none"
        raise InvalidArgument(f"method: unknown method {got}, expected one of {sorted(METHODS)}")
    return name
