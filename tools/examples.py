"""Build the example model repository: `python -m tools.examples --out DIR`.

The layout is the one the inference service reads, `DIR/<model>/<version>/model.onnx`:

    digits/1/model.onnx           tools.digits: 8x8 digit images -> class probabilities
    digits/digits_holdout.npz     its held-out images and labels, for end-to-end checks
    adder/1/model.onnx            a, b [batch, 4] -> sum, diff (two inputs, two outputs)

and, unless `--small`, the large demos built from the packages that carry their
weights (tools/demo/; about 1.5 minutes on 2 cores the first time):

    minilm/        all-MiniLM-L6-v2 sentence embeddings (task: embedding)
    smollm2/       SmolLM2-135M-Instruct chat, int4 (task: generate)
    efficientnet/  EfficientNet-Lite0 ImageNet classifier, UINT8 images

A model is rebuilt only when the code that makes it (or torch/onnx, or for a demo
the packages it reads) changed since its last build, so a second run is quick and
leaves the files, and their mtimes, alone.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from tools import digits
from tools.export import export_module
from tools.export_cli import progress_to_stderr

_log = logging.getLogger("tools.examples")  # not __name__: that is __main__ under -m

MODEL_FILE = "model.onnx"
STAMP_FILE = ".example-stamp.json"  # hidden: the repository scanner skips dot-files
# The modules whose code decides what the examples contain.
_SOURCES = ("examples.py", "digits.py", "export.py", "parity.py")


@dataclass(frozen=True)
class Built:
    """What one example's builder wrote, and a short note about it."""

    files: list[Path]
    note: str = ""


@dataclass(frozen=True)
class ExampleStatus:
    """One example after a build: the files it has, and whether they were just written."""

    name: str
    files: list[Path]
    rebuilt: bool
    note: str = ""


class AddSub(torch.nn.Module):
    """The `adder` model: two inputs and two outputs, for exercising the protocol."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(a + b, a - b), elementwise."""
        return a + b, a - b


def build_digits(model_dir: Path) -> Built:
    """digits/1/model.onnx and digits/digits_holdout.npz, from tools.digits."""
    result = digits.train_and_export(
        model_dir / "1" / MODEL_FILE, holdout_path=model_dir / digits.HOLDOUT_FILE
    )
    note = (
        f"held-out accuracy {result.accuracy:.3f} on {result.holdout_size} images, "
        f"trained in {result.train_seconds:.1f} s"
    )
    return Built([result.path, result.holdout_path], note)


def build_adder(model_dir: Path) -> Built:
    """adder/1/model.onnx: FP32 a, b [batch, 4] -> sum, diff."""
    examples = (torch.zeros(2, 4), torch.zeros(2, 4))
    result = export_module(
        AddSub(),
        examples,
        model_dir / "1" / MODEL_FILE,
        input_names=["a", "b"],
        output_names=["sum", "diff"],
    )
    return Built([result.path])


def example_builders() -> dict[str, Callable[[Path], Built]]:
    """Every example model, by name, with the function that builds its directory."""
    return {"digits": build_digits, "adder": build_adder}


def large_builders() -> dict[str, Callable[[Path], None]]:
    """The large demo models (tools/demo/), by name; each keeps its own stamp."""
    from tools.demo import efficientnet, minilm, smollm2

    return {m.NAME: m.build for m in (minilm, smollm2, efficientnet)}


def build_repository(out: Path, *, force: bool = False, large: bool = False) -> list[ExampleStatus]:
    """Build every example under `out` (and the large demos if asked), skipping those
    that are up to date unless force."""
    fingerprint = _fingerprint()
    statuses = []
    for name, build in example_builders().items():
        model_dir = out / name
        files = _built_files(model_dir, fingerprint)
        if files is not None and not force:
            statuses.append(ExampleStatus(name, files, rebuilt=False))
            continue
        _log.info("building %s ...", name)
        built = build(model_dir)
        stamp = {
            "fingerprint": fingerprint,
            "files": [str(f.relative_to(model_dir)) for f in built.files],
        }
        (model_dir / STAMP_FILE).write_text(json.dumps(stamp, indent=2) + "\n")
        statuses.append(ExampleStatus(name, built.files, rebuilt=True, note=built.note))
    if large:
        statuses += [
            _build_large(out / name, build, force) for name, build in large_builders().items()
        ]
    return statuses


def _build_large(model_dir: Path, build: Callable[[Path], None], force: bool) -> ExampleStatus:
    from tools.demo import stamp

    if force:
        (model_dir / stamp.STAMP_FILE).unlink(missing_ok=True)
    before = stamp.build_identity(model_dir)
    _log.info("building %s unless it is up to date ...", model_dir.name)
    build(model_dir)
    rebuilt = before is None or stamp.build_identity(model_dir) != before
    return ExampleStatus(model_dir.name, stamp.listed_files(model_dir), rebuilt=rebuilt)


def _built_files(model_dir: Path, fingerprint: str) -> list[Path] | None:
    """The files of an up-to-date build of this example, or None if it needs building."""
    try:
        stamp = json.loads((model_dir / STAMP_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(stamp, dict) or stamp.get("fingerprint") != fingerprint:
        return None
    files = [model_dir / name for name in stamp.get("files", [])]
    return files if files and all(f.is_file() for f in files) else None


def _fingerprint() -> str:
    """A hash of the code and library versions that decide the examples' contents."""
    import onnx

    digest = hashlib.sha256(f"torch {torch.__version__} onnx {onnx.__version__}".encode())
    here = Path(__file__).parent
    for name in _SOURCES:
        digest.update(name.encode() + b"\0" + (here / name).read_bytes())
    return digest.hexdigest()


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m tools.examples --out DIR [--force] [--small]`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, required=True, help="the model repository directory")
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    parser.add_argument(
        "--small", action="store_true", help="only digits and adder, not the large demos"
    )
    args = parser.parse_args(argv)
    with progress_to_stderr():
        statuses = build_repository(args.out, force=args.force, large=not args.small)
    for status in statuses:
        state = "wrote" if status.rebuilt else "up to date:"
        files = ", ".join(str(f) for f in status.files)
        note = f" ({status.note})" if status.note else ""
        print(f"{status.name}: {state} {files}{note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
