"""The large demo models (tools/demo/) for the tests, built once and shared.

Each is built under .data/demo-models/<name>, where the other demo-model helpers
(tests/integration/inference/*_models.py) build them too: the builder skips a
current build, and its file lock makes a second pytest process (the interop suite
runs in its own) wait for the first instead of building again. A repository is
assembled beside them with a temporary name and renamed into place, so a
process never sees a half-made one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from tools.demo import efficientnet, minilm, smollm2

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".data" / "demo-models"
BUILDERS: dict[str, Callable[[Path], None]] = {
    minilm.NAME: minilm.build,
    smollm2.NAME: smollm2.build,
    efficientnet.NAME: efficientnet.build,
}


def demo_model_dir(name: str) -> Path:
    """The built model directory of one demo (config.yaml and 1/); treat it as read-only."""
    model_dir = CACHE / name
    BUILDERS[name](model_dir)
    return model_dir


def demo_repository(*names: str) -> Path:
    """A model repository serving the named demos (all three if none are named).

    Each model's version directory is a link to the built one (no 90 MB copies) and
    its config.yaml a copy, so a test may write its own repository the same way.
    """
    wanted = sorted(names or BUILDERS)
    built = {name: demo_model_dir(name) for name in wanted}
    target = CACHE / f"repository-{'-'.join(wanted)}"
    if target.is_dir():
        return target
    staging = Path(tempfile.mkdtemp(dir=CACHE, prefix=".repository-"))
    for name, model_dir in built.items():
        (staging / name).mkdir()
        (staging / name / "1").symlink_to(model_dir / "1", target_is_directory=True)
        shutil.copyfile(model_dir / "config.yaml", staging / name / "config.yaml")
    try:
        os.rename(staging, target)
    except OSError:  # another process finished first
        shutil.rmtree(staging, ignore_errors=True)
    return target


def repository_with(root: Path, demo: str, config: str, name: str | None = None) -> Path:
    """A repository at `root` serving the built `demo` as `name` (the demo's own name by
    default) with `config` (YAML): the version directory is linked, not copied."""
    model = root / (name or demo)
    model.mkdir(parents=True)
    (model / "1").symlink_to(demo_model_dir(demo) / "1", target_is_directory=True)
    (model / "config.yaml").write_text(config)
    return root
