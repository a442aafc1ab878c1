"""Writing an exported ONNX model: inline or with external weights, then into place."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from tools.parity import ExportError

if TYPE_CHECKING:
    import onnx


def save_model(proto: onnx.ModelProto, path: Path, *, external_data: bool) -> None:
    """Write the model; with external_data, initializers of 1 KiB or more go to `<name>.data`.

    Smaller ones (shapes, scalars) stay inline so that shape inference can read them.
    """
    import onnx

    if external_data:
        onnx.save_model(
            proto,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=path.name + ".data",
        )
        return
    if proto.ByteSize() >= 2**31:
        raise ExportError("the model is larger than 2 GiB: export it with external_data")
    onnx.save_model(proto, str(path))


def install_model(staged: Path, path: Path) -> None:
    """Move a checked model (and its weights file, if any) into place."""
    data = path.with_name(path.name + ".data")
    staged_data = staged.with_name(staged.name + ".data")
    if staged_data.exists():
        # onnx creates the weights file owner-only; serve it like the model file.
        os.chmod(staged_data, staged.stat().st_mode & 0o777)
        os.replace(staged_data, data)
    elif data.exists():
        data.unlink()  # a stale weights file from an earlier external-data export
    os.replace(staged, path)
