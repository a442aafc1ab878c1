"""Background rows for KernelSHAP: from the request, or stored with the model version.

A version may keep `background.npz` beside its model.onnx (one array per input, named
like it, [n, *example shape]): in a model repository it sits in <model>/<version>/, and
in registry mode it is one of the version's uploaded files, which inference downloads
into the same directory as model.onnx.
"""

from __future__ import annotations

import asyncio
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from services.common.datatypes import by_numpy
from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.names import echo
from services.common.tensors import Encoded
from services.inference.model import LoadedModel
from services.inference.validate import TensorLimits

BACKGROUND_FILE = "background.npz"


def check_background(
    arrays: Mapping[str, np.ndarray], example: Mapping[str, np.ndarray], what: str = "background"
) -> dict[str, np.ndarray]:
    """`arrays` if they hold the same number n >= 1 of rows for every input, each row
    shaped and typed like the example's; InvalidArgument naming `what` otherwise."""
    for name in arrays:
        if name not in example:
            raise InvalidArgument(
                f"{what}: unknown input {echo(name)}, expected inputs {sorted(example)}"
            )
    missing = [n for n in example if n not in arrays]
    if missing:
        raise InvalidArgument(
            f"{what}: no rows for input {echo(missing[0])}, expected a background tensor for "
            f"each input {sorted(example)}"
        )
    rows = None
    checked = {}
    for name, x in example.items():
        array = arrays[name]
        want = [-1, *x.shape[1:]]
        if array.ndim != x.ndim or array.shape[1:] != x.shape[1:] or len(array) == 0:
            raise InvalidArgument(
                f"{what} {echo(name)}: shape {list(array.shape)}, expected {want} "
                "(n >= 1 rows shaped like the input's example)"
            )
        if rows is not None and len(array) != rows:
            raise InvalidArgument(
                f"{what} {echo(name)}: {len(array)} rows, expected {rows} like the other inputs"
            )
        rows = len(array)
        got, expected = by_numpy(array.dtype).name, by_numpy(x.dtype).name
        if got != expected:
            raise InvalidArgument(f"{what} {echo(name)}: datatype {got}, expected {expected}")
        checked[name] = array
    return checked


def decode_background(
    tensors: Mapping[str, Encoded], example: Mapping[str, np.ndarray], limits: TensorLimits
) -> dict[str, np.ndarray]:
    """The request's background tensors decoded, once their heads fit the example."""
    for tensor in tensors.values():
        if tensor.count > limits.max_elements:
            raise InvalidArgument(
                f"background {echo(tensor.name)}: shape {list(tensor.shape)} has "
                f"{tensor.count} elements, expected at most {limits.max_elements}"
            )
    # The headers first, as views that hold no data, so a bad one decodes nothing.
    views = {
        n: np.broadcast_to(np.zeros((), t.datatype.numpy), t.shape) for n, t in tensors.items()
    }
    check_background(views, example)
    return check_background({n: t.decode() for n, t in tensors.items()}, example)


async def stored_background(
    model: LoadedModel, example: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray] | None:
    """The background stored with the model's version, or None when it has none."""
    path = model.path.parent / BACKGROUND_FILE
    try:
        arrays = await asyncio.to_thread(_read, path)
    except FileNotFoundError:
        return None
    what = f"the background stored with model {model.name!r} version {model.version}"
    if arrays is None:
        raise FailedPrecondition(f"{what} is not a readable .npz file of arrays")
    try:
        return check_background(arrays, example, what)
    except InvalidArgument as exc:
        raise FailedPrecondition(exc.message) from None


def _read(path: Path) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except FileNotFoundError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile):
        return None
