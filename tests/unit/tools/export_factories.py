"""Small PyTorch modules for the export tests, importable as factories by `maas export`."""

from __future__ import annotations

import torch
from torch import nn


class SmallCnn(nn.Module):
    """[batch, 1, 8, 8] -> probabilities [batch, 10], with conv, batch norm and softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, kernel_size=3)
        self.norm = nn.BatchNorm2d(8)
        self.head = nn.Linear(8 * 6 * 6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = torch.relu(self.norm(self.conv(x))).flatten(1)
        return torch.softmax(self.head(features), dim=1)


class AddSub(nn.Module):
    """Two inputs, two outputs: (a + b, a - b)."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return a + b, a - b


class Scale(nn.Module):
    """x * 2, which torch and ONNX Runtime run for every integer and float dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


class Invert(nn.Module):
    """Logical not, for bool tensors."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ~x


class ExportDiverges(nn.Module):
    """x * 3 while torch.export traces it, x * 2 when run: a broken export to catch.

    (A Python-side call counter would not do: torch.export restores module attributes.)
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 3 if torch.compiler.is_exporting() else x * 2


class SumOverBatch(nn.Module):
    """Reduces over dim 0, so its output has no batch dimension."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum(dim=0)


def mlp() -> nn.Module:
    """[batch, 4] -> [batch, 3]."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


class _Embed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embed(ids)


def token_embedding() -> nn.Module:
    """int64 ids [batch, sequence] -> [batch, sequence, 4]."""
    torch.manual_seed(0)
    return _Embed()
