"""What a client may see of a server-side reason: no file paths, full text only on request.

Load failures quote ONNX Runtime, whose messages name the model file by its full
path (`Load model from /data/cache/.../model.onnx failed`). Clients get the reason
with paths cut down to the file's name; the full text goes to the log, and to a
caller the service has let see it (see `full_detail`).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from pathlib import Path

# An absolute POSIX path: a `/` that starts a word (not inside a URL, a relative path or
# a number like 1/2), then components up to a space, quote, bracket, comma or colon.
_ABSOLUTE = re.compile(r"(?<![\w/.:~-])/(?:[^\s/'\"()\[\]{},:;]+/)*([^\s/'\"()\[\]{},:;]*)")

_full_detail: ContextVar[bool] = ContextVar("maas_full_detail", default=False)


def without_paths(text: str, bases: Iterable[Path | str] = ()) -> str:
    """`text` with each of `bases` (directories) removed from the paths under them, and
    every other absolute path replaced by its last component."""
    for base in bases:
        for form in {str(base), os.path.abspath(base)}:
            if form and form != os.sep:
                text = text.replace(form.rstrip(os.sep) + os.sep, "")
    return _ABSOLUTE.sub(lambda m: m[1] or "<path>", text)


def full_detail() -> bool:
    """Whether the current call may see full reasons (set by the service's auth)."""
    return _full_detail.get()


@contextlib.contextmanager
def showing_full_detail() -> Iterator[None]:
    """Within this block, the current call (task) sees full reasons."""
    token = _full_detail.set(True)
    try:
        yield
    finally:
        _full_detail.reset(token)
