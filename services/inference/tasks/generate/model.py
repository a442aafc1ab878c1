"""Generative models (`task: generate`)."""

from __future__ import annotations

from pathlib import Path

from services.inference.config import ModelConfig
from services.inference.runtime import LoadError
from services.inference.tasks import TaskBackend


def open_generate(directory: Path, config: ModelConfig) -> TaskBackend:
    """Not served yet: the version fails to load with this reason."""
    raise LoadError("task 'generate' is not served by this build yet")
