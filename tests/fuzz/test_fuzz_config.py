"""Fuzz the serving config YAML: from files, registry labels and upload metadata alike."""

from __future__ import annotations

import pytest

from services.common.errors import InvalidArgument
from services.inference.config import ModelConfig, parse_config
from services.registry.uploads import check_config
from tests.fuzz.harness import fuzz
from tests.fuzz.yaml_inputs import yaml_texts

pytestmark = pytest.mark.fuzz_target


def _check_inference(text: str) -> None:
    try:
        config = parse_config(text, source="config.yaml")
    except InvalidArgument as exc:
        assert exc.message.startswith("config.yaml: ")
    else:
        assert isinstance(config, ModelConfig)
        assert check_config(text) == text


def _check_registry(text: str) -> None:
    try:
        check_config(text)
    except InvalidArgument as exc:
        assert exc.message.startswith("config: ")


def check_config_text(text: str) -> None:
    """A ModelConfig or InvalidArgument from inference, and from the registry's upload check."""
    errors = []
    for check in (_check_inference, _check_registry):
        try:
            check(text)
        except Exception as exc:  # noqa: BLE001 - both run; the worst is raised below
            errors.append(exc)
    if errors:
        raise errors[0]


def test_fuzz_serving_config() -> None:
    fuzz("serving config YAML", yaml_texts(), check_config_text)
