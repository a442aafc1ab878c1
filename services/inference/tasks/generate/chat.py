"""The model's tokenizer and chat template, and text decoded as tokens arrive."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer
from tokenizers.decoders import DecodeStream

from services.common.errors import InvalidArgument
from services.inference.runtime import LoadError

ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class Message:
    """One chat turn."""

    role: str
    content: str


def _raise(message: str) -> None:
    raise InvalidArgument(f"the chat template refused the messages: {message}")


class ChatTemplate:
    """The Jinja chat template of the model's own tokenizer configuration, rendered
    in a sandbox the way transformers renders it (trim_blocks, lstrip_blocks)."""

    def __init__(self, source: str, special: dict[str, str]) -> None:
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise
        self.template = env.from_string(source)
        self.special = special

    def render(self, messages: Sequence[Message]) -> str:
        """The prompt for `messages`, ending where the assistant's answer begins."""
        turns = [{"role": m.role, "content": m.content} for m in messages]
        try:
            return self.template.render(messages=turns, add_generation_prompt=True, **self.special)
        except TemplateError:
            raise InvalidArgument("the chat template could not render these messages") from None


def _token_text(value: Any) -> str:
    """tokenizer_config.json names special tokens as strings or as AddedToken objects."""
    if isinstance(value, dict):
        return str(value.get("content", ""))
    return str(value) if value is not None else ""


def load_tokenizer(directory: Path) -> Tokenizer:
    """The Hugging Face tokenizer.json of a version."""
    path = directory / "tokenizer.json"
    if not path.is_file():
        raise LoadError("a generate model needs tokenizer.json beside model.onnx")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # noqa: BLE001 - tokenizers raises plain Exception
        raise LoadError(f"tokenizer.json could not be read: {exc}") from None


def load_template(directory: Path) -> ChatTemplate | None:
    """chat_template.jinja, else tokenizer_config.json's chat_template; None if neither."""
    config: dict[str, Any] = {}
    config_path = directory / "tokenizer_config.json"
    if config_path.is_file():
        try:
            config = json.loads(config_path.read_text())
        except ValueError as exc:
            raise LoadError(f"tokenizer_config.json is not JSON: {exc}") from None
    path = directory / "chat_template.jinja"
    source = path.read_text() if path.is_file() else config.get("chat_template")
    if not isinstance(source, str):
        return None
    special = {key: _token_text(config.get(key)) for key in ("bos_token", "eos_token", "pad_token")}
    try:
        return ChatTemplate(source, special)
    except TemplateError as exc:
        raise LoadError(f"the chat template does not compile: {exc}") from None


class TextStream:
    """A sequence's generated text, piece by piece: the tokenizer's DecodeStream holds
    back tokens that end inside a UTF-8 character until the character is whole."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.stream = DecodeStream(skip_special_tokens=True)

    def step(self, token: int) -> str:
        """The text `token` completes ("" while a character is still partial)."""
        return self.stream.step(self.tokenizer, token) or ""
