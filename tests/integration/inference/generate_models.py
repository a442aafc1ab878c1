"""The demo chat model (tools/demo/smollm2.py) for the generate tests, built once under
.data/ (the builder skips a current build), and repositories that serve it."""

from __future__ import annotations

from pathlib import Path

from tests import demo_models
from tests.demo_models import demo_model_dir
from tools.demo import smollm2

CHAT = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
# Sixteen different chat prompts, for the batched-against-alone comparisons.
QUESTIONS = (
    "What is the capital of France?",
    "Write a short poem about the sea and the wind.",
    "Name three primary colours.",
    "How many legs does a spider have?",
    "Explain what a rainbow is in one sentence.",
    "What is 12 times 12?",
    "Give me a tip for learning to cook.",
    "Who wrote Romeo and Juliet?",
    "What does a bee make?",
    "Describe a cat in five words.",
    "Why is the sky blue?",
    "What is the boiling point of water?",
    "Translate 'good morning' into French.",
    "List two planets near the Sun.",
    "What is a verb?",
    "Tell me a fun fact about octopuses.",
)


def smollm2_dir() -> Path:
    """The built model directory (config.yaml and 1/), read-only for the tests."""
    return demo_model_dir(smollm2.NAME)


def repository_with(root: Path, config: str, name: str = smollm2.NAME) -> Path:
    """A repository at `root` serving the built model as `name` with `config` (YAML):
    the version directory is linked, not copied (90 MB)."""
    return demo_models.repository_with(root, smollm2.NAME, config, name)
