"""The `digits` demo model: a small CNN for scikit-learn's 8x8 handwritten digits.

This is also an example of preparing a model for maas:

1. Put preprocessing inside the module. Clients send raw pixels (0..16, as
   `sklearn.datasets.load_digits` gives them) and the graph divides by 16 itself, so
   no client can get the normalisation wrong.
2. Return what clients want (probabilities), not what the loss wants (logits):
   training uses `logits()`, serving uses `forward()`, which adds the softmax.
3. Export with `tools.export.export_module`: a dynamic batch, class labels in the
   metadata, and a parity check against torch on the held-out images.

    python -m tools.digits --out digits.onnx

The data ships with scikit-learn, so nothing is downloaded. Training is seeded and
takes a few seconds on two CPU cores.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tools.export import ExportResult, export_module
from tools.export_cli import progress_to_stderr

_log = logging.getLogger("tools.digits")  # not __name__: that is __main__ under -m

INPUT_NAME = "input"
OUTPUT_NAME = "probabilities"
CLASS_LABELS = tuple(str(digit) for digit in range(10))
PIXEL_MAX = 16.0  # load_digits pixels are counts of set bits in 4x4 blocks: 0..16
HOLDOUT_FILE = "digits_holdout.npz"


@dataclass(frozen=True)
class TrainingConfig:
    """Hyperparameters; the defaults reach about 98% held-out accuracy."""

    epochs: int = 15
    batch_size: int = 32
    learning_rate: float = 3e-3
    test_fraction: float = 0.2
    seed: int = 0


@dataclass(frozen=True)
class DigitsResult:
    """The exported model, its held-out split, and how well it did."""

    path: Path
    holdout_path: Path
    accuracy: float
    train_seconds: float
    train_size: int
    holdout_size: int
    export: ExportResult


@dataclass(frozen=True)
class Split:
    """Images as float32 [N, 1, 8, 8] raw pixels and labels as int64 [N]."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


class DigitsNet(nn.Module):
    """Raw 8x8 pixels [batch, 1, 8, 8] in, probabilities of the ten digits [batch, 10] out."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 8x8 -> 4x4
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(0.2),
            nn.Linear(32 * 4 * 4, 64),
            nn.ReLU(),
            nn.Linear(64, len(CLASS_LABELS)),
        )

    def logits(self, pixels: torch.Tensor) -> torch.Tensor:
        """Unnormalised class scores, for the training loss."""
        return self.classifier(self.features(pixels / PIXEL_MAX))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Class probabilities: what the served model returns."""
        return torch.softmax(self.logits(pixels), dim=1)


def load_split(test_fraction: float = 0.2, seed: int = 0) -> Split:
    """load_digits, split into a stratified training set and a fixed held-out set."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype(np.float32)[:, None, :, :]
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=test_fraction, random_state=seed, stratify=labels
    )
    return Split(x_train, y_train, x_test, y_test)


def train(model: DigitsNet, split: Split, config: TrainingConfig) -> None:
    """Train in place with Adam and cross-entropy on the logits."""
    images = torch.from_numpy(split.train_images)
    labels = torch.from_numpy(split.train_labels)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    order = torch.Generator().manual_seed(config.seed)
    model.train()
    for _ in range(config.epochs):
        for batch in torch.randperm(len(images), generator=order).split(config.batch_size):
            loss = torch.nn.functional.cross_entropy(model.logits(images[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()


def accuracy(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    """The fraction of `images` whose most probable class is the label."""
    with torch.inference_mode():
        predicted = model.eval()(torch.from_numpy(images)).argmax(dim=1).numpy()
    return float((predicted == labels).mean())


def train_and_export(
    out_path: Path,
    *,
    holdout_path: Path | None = None,
    config: TrainingConfig | None = None,
) -> DigitsResult:
    """Train DigitsNet, export it to `out_path`, and save the held-out split as .npz.

    The split goes to `holdout_path`, by default `digits_holdout.npz` next to the model,
    with `images` float32 [N, 1, 8, 8] and `labels` int64 [N], for end-to-end checks.
    """
    config = config or TrainingConfig()
    out_path = Path(out_path)
    holdout_path = Path(holdout_path or out_path.with_name(HOLDOUT_FILE))
    split = load_split(config.test_fraction, config.seed)
    # Seed initialisation and dropout without disturbing the caller's random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = DigitsNet()
        _log.info("training on %d images for %d epochs ...", len(split.train_labels), config.epochs)
        started = time.perf_counter()
        train(model, split, config)
        seconds = time.perf_counter() - started
    held_out = torch.from_numpy(split.test_images)
    exported = export_module(
        model,
        (held_out[:2],),
        out_path,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        class_labels=CLASS_LABELS,
        parity_inputs=(held_out,),  # real images, at a batch size other than the example's
    )
    _save_holdout(holdout_path, split.test_images, split.test_labels)
    return DigitsResult(
        path=exported.path,
        holdout_path=holdout_path,
        accuracy=accuracy(model, split.test_images, split.test_labels),
        train_seconds=seconds,
        train_size=len(split.train_labels),
        holdout_size=len(split.test_labels),
        export=exported,
    )


def _save_holdout(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """Write the split atomically, so that a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("wb") as f:
        np.savez(f, images=images, labels=labels)
    os.replace(partial, path)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m tools.digits --out digits.onnx`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=Path("digits.onnx"), help="the ONNX file")
    parser.add_argument("--epochs", type=int, default=TrainingConfig.epochs)
    args = parser.parse_args(argv)
    with progress_to_stderr():
        result = train_and_export(args.out, config=TrainingConfig(epochs=args.epochs))
    print(
        f"wrote {result.path} and {result.holdout_path}: held-out accuracy "
        f"{result.accuracy:.3f} on {result.holdout_size} images, "
        f"trained on {result.train_size} in {result.train_seconds:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
