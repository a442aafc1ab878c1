"""Fixtures every test tier shares. Nothing here imports the generated stubs:
the interop suite imports tritonclient, whose descriptors clash with ours."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.models import test_repository


@pytest.fixture(scope="session")
def test_models() -> Path:
    """The shared, read-only repository of models exported from PyTorch."""
    return test_repository()


@pytest.fixture
def make_repository(test_models: Path, tmp_path: Path) -> Callable[..., Path]:
    """A private model repository holding copies of the named test models."""

    def make(*names: str) -> Path:
        root = tmp_path / "repository"
        root.mkdir(exist_ok=True)
        for name in names:
            shutil.copytree(test_models / name, root / name)
        return root

    return make
