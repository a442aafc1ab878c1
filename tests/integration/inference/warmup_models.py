"""A model that the default warm-up breaks: `y = x.reshape(-1, 3)` over a 1-D `x[n]`.

The default warm-up sends one row of zeros (`x[1]`), which ONNX Runtime cannot
reshape to `[-1, 3]`; three elements and more work.
"""

from __future__ import annotations

from pathlib import Path

import torch


class RowsOfThree(torch.nn.Module):
    """Reshapes x[n] to [n / 3, 3]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, 3)


def export_rows_of_three(path: Path) -> Path:
    """Export RowsOfThree with a dynamic `n` into path; returns path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = torch.export.Dim("n", min=1, max=4096)
    torch.onnx.export(
        RowsOfThree().eval(),
        (torch.ones(6),),
        str(path),
        input_names=["x"],
        output_names=["y"],
        dynamo=True,
        dynamic_shapes=({0: n},),
        external_data=False,
        opset_version=18,
    )
    return path
