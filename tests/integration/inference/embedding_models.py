"""The demo embedding model (tools/demo/minilm.py) for the embedding tests, built once
under .data/ (the builder skips a current build), and repositories that serve it."""

from __future__ import annotations

from pathlib import Path

from tools.demo import minilm

ROOT = Path(__file__).resolve().parents[3]
BUILT = ROOT / ".data" / "demo-models" / minilm.NAME


def minilm_dir() -> Path:
    """The built model directory (config.yaml and 1/), read-only for the tests."""
    minilm.build(BUILT)
    return BUILT


def repository_with(root: Path, config: str, name: str = minilm.NAME) -> Path:
    """A repository at `root` serving the built model as `name` with `config` (YAML):
    the version directory is linked, not copied (90 MB)."""
    model = root / name
    model.mkdir(parents=True)
    (model / "1").symlink_to(minilm_dir() / "1", target_is_directory=True)
    (model / "config.yaml").write_text(config)
    return root
