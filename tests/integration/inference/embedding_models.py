"""The demo embedding model (tools/demo/minilm.py) for the embedding tests, built once
under .data/ (the builder skips a current build), and repositories that serve it."""

from __future__ import annotations

from pathlib import Path

from tests import demo_models
from tests.demo_models import demo_model_dir
from tools.demo import minilm


def minilm_dir() -> Path:
    """The built model directory (config.yaml and 1/), read-only for the tests."""
    return demo_model_dir(minilm.NAME)


def repository_with(root: Path, config: str, name: str = minilm.NAME) -> Path:
    """A repository at `root` serving the built model as `name` with `config` (YAML):
    the version directory is linked, not copied (90 MB)."""
    return demo_models.repository_with(root, minilm.NAME, config, name)
