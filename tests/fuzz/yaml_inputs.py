"""YAML inputs for the config fuzz targets."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import strategies as st

_KEYS = {
    "": ["dynamic_batching", "instances", "providers", "require_cuda", "cuda", "tensorrt"],
    "dynamic_batching": ["enabled", "max_batch_size", "max_queue_delay_us", "max_queue_size"],
    "cuda": ["device_id", "gpu_mem_limit", "cudnn_conv_algo_search", "io_binding"],
    "threads": ["intra_op", "inter_op", "spinning"],
}
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(["auto", "cpu", "cuda", "tensorrt", "HEURISTIC", "kSameAsRequested"]),
)
# Scalar spellings YAML gives meaning to, as a fuzzer's dictionary would hold them.
_TOKENS = [
    "~",
    "null",
    "yes",
    "off",
    ".inf",
    "-.nan",
    "0x1F",
    "0o17",
    "1_000",
    "1e3",
    "!!binary |",
    "!!python/object:os.system",
    "&a",
    "*a",
    "<<: *a",
    "? ",
    "- ",
    "{",
    "}",
    "[",
    "]",
    ": ",
    "\n  ",
    "2001-12-14",
    "2001-13-45",
    "2001-02-30t21:59:43.10-05:00",
    "!!timestamp x",
    "'",
    '"',
    "|",
    ">",
    "%YAML 1.1\n---\n",
    "---",
    "...",
    "\t",
    "#",
    "!!int x",
    "!!float ''",
    "@",
]


def _structures() -> st.SearchStrategy[Any]:
    def children(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        keys = st.one_of(*(st.sampled_from(k) for k in _KEYS.values()), st.text(max_size=6))
        return st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4))

    configs = st.fixed_dictionaries(
        {}, optional={key: st.recursive(_SCALARS, children, max_leaves=8) for key in _KEYS[""]}
    )
    return st.one_of(configs, st.recursive(_SCALARS, children, max_leaves=12))


def _dump(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=False, allow_unicode=True)


@st.composite
def yaml_texts(draw: st.DrawFn) -> str:
    """YAML text: a dumped structure, then text-level mutations with YAML's own tokens."""
    text = draw(_structures().map(_dump))
    for _ in range(draw(st.integers(0, 4))):
        pos = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["token", "tokens", "text", "delete", "repeat"]))
        if op == "token":
            text = text[:pos] + draw(st.sampled_from(_TOKENS)) + text[pos:]
        elif op == "tokens":
            run = draw(st.sampled_from(_TOKENS)) * draw(st.integers(1, 3000))
            text = text[:pos] + run + text[pos:]
        elif op == "text":
            text = text[:pos] + draw(st.text(max_size=6)) + text[pos:]
        elif op == "delete":
            text = text[:pos] + text[pos + draw(st.integers(1, 12)) :]
        else:
            chunk = text[pos : pos + draw(st.integers(1, 4))]
            text = text[:pos] + chunk * draw(st.integers(1, 2000)) + text[pos:]
    return text
