"""A generate request's v2 inputs (Triton's vLLM backend I/O) as one plain request."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from services.common.datatypes import by_name
from services.common.errors import InvalidArgument
from services.common.names import echo
from services.inference.runtime import Signature, TensorSpec
from services.inference.tasks.generate.chat import ROLES, Message
from services.inference.tasks.generate.sampling import SamplingParams

FLAGS = (
    "stream",
    "exclude_input_in_output",
    "return_num_input_tokens",
    "return_num_output_tokens",
    "return_finish_reason",
)
MAX_STOPS = 16
MAX_STOP_CHARS = 256
MAX_MESSAGES = 1024


def generate_signature() -> Signature:
    """The v2 inputs and outputs of every generate model; all inputs but one of
    text_input and messages may be left out."""

    def spec(name: str, datatype: str, shape: int = 1, optional: bool = False) -> TensorSpec:
        return TensorSpec(name, by_name(datatype, tensor=name), (shape,), optional=optional)

    inputs = (
        spec("text_input", "BYTES", optional=True),
        spec("messages", "BYTES", optional=True),
        spec("sampling_parameters", "BYTES", optional=True),
        *(spec(flag, "BOOL", optional=True) for flag in FLAGS),
    )
    outputs = (
        spec("text_output", "BYTES", -1),
        spec("num_input_tokens", "UINT32"),
        spec("num_output_tokens", "UINT32"),
        spec("finish_reason", "BYTES"),
    )
    return Signature(inputs, outputs)


class _Sampling(BaseModel):
    """sampling_parameters; numbers may come as JSON strings, as vLLM's examples send."""

    model_config = ConfigDict(extra="forbid")

    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(0.0, ge=0.0, le=100.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    # vLLM's -1 and 0 both mean no limit.
    top_k: int = Field(0, ge=-1)
    seed: int | None = Field(None, ge=0, lt=1 << 63)
    stop: list[str] | str | None = None

    @field_validator("stop")
    @classmethod
    def _stop(cls, value: list[str] | str | None) -> list[str] | str | None:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > MAX_STOPS:
            raise ValueError(f"at most {MAX_STOPS} stop strings, got {len(stops)}")
        for stop in stops:
            if not stop or len(stop) > MAX_STOP_CHARS:
                raise ValueError(f"stop strings of 1 to {MAX_STOP_CHARS} characters")
        return value


@dataclass(frozen=True)
class GenerateRequest:
    """What one request asks for, checked."""

    # The text_input as given, or the messages rendered through the chat template.
    prompt: str
    # Whether the prompt was rendered from messages (then it holds special tokens).
    chat: bool
    sampling: SamplingParams
    # Whether sampling_parameters named max_tokens (else it is the model's default).
    max_tokens_given: bool = False
    stream: bool = False
    exclude_input: bool = False
    return_input_tokens: bool = False
    return_output_tokens: bool = False
    return_finish_reason: bool = False


def _one_string(inputs: dict[str, np.ndarray], name: str) -> str | None:
    array = inputs.get(name)
    if array is None:
        return None
    item = array.reshape(-1)[0]
    return item if isinstance(item, str) else bytes(item).decode()


def _flag(inputs: dict[str, np.ndarray], name: str) -> bool:
    array = inputs.get(name)
    return bool(array.reshape(-1)[0]) if array is not None else False


def _shown(value: object, limit: int = 64) -> str:
    """A client's JSON value for an error message, cut when long."""
    text = json.dumps(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def parse_sampling(text: str | None, default_max_tokens: int) -> SamplingParams:
    """sampling_parameters JSON as SamplingParams; InvalidArgument naming the bad key."""
    raw: Any = {}
    if text:
        try:
            raw = json.loads(text)
        except ValueError:
            raise InvalidArgument(
                f"sampling_parameters: expected a JSON object, got {echo(text)}"
            ) from None
    if not isinstance(raw, dict):
        raise InvalidArgument(
            f"sampling_parameters: expected a JSON object, got {type(raw).__name__}"
        )
    try:
        given = _Sampling.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"]) or "?"
        if error["type"] == "extra_forbidden":
            expected = f"one of {sorted(_Sampling.model_fields)}"
        else:
            expected = error["msg"]
        got = _shown(error["input"]) if "input" in error else "nothing"
        raise InvalidArgument(
            f"sampling_parameters key {echo(key)}: expected {expected}, got {got}"
        ) from None
    stops = [given.stop] if isinstance(given.stop, str) else given.stop or []
    return SamplingParams(
        max_tokens=given.max_tokens or default_max_tokens,
        temperature=given.temperature,
        top_p=given.top_p,
        top_k=max(given.top_k, 0),
        seed=given.seed,
        stop=tuple(stops),
    )


def parse_messages(text: str) -> list[Message]:
    """The `messages` input: a JSON list of {"role", "content"} objects."""
    try:
        raw = json.loads(text)
    except ValueError:
        raise InvalidArgument(
            f"messages: expected a JSON list of {{role, content}}, got {echo(text)}"
        ) from None
    if not isinstance(raw, list) or not raw:
        raise InvalidArgument("messages: expected a non-empty JSON list of {role, content}")
    if len(raw) > MAX_MESSAGES:
        raise InvalidArgument(f"messages: expected at most {MAX_MESSAGES}, got {len(raw)}")
    messages = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or set(item) != {"role", "content"}:
            got = sorted(item) if isinstance(item, dict) else type(item).__name__
            raise InvalidArgument(
                f"messages[{i}]: expected an object with keys ['content', 'role'], got {got}"
            )
        role, content = item["role"], item["content"]
        if role not in ROLES:
            raise InvalidArgument(
                f"messages[{i}].role: expected one of {list(ROLES)}, got {echo(str(role))}"
            )
        if not isinstance(content, str):
            raise InvalidArgument(
                f"messages[{i}].content: expected a string, got {type(content).__name__}"
            )
        messages.append(Message(role, content))
    return messages


def parse_request(
    inputs: dict[str, np.ndarray], default_max_tokens: int, render: Any
) -> GenerateRequest:
    """The request in `inputs` (already checked against the signature); `render`
    turns messages into a prompt, or is None when the model has no chat template."""
    text = _one_string(inputs, "text_input")
    messages = _one_string(inputs, "messages")
    if (text is None) == (messages is None):
        raise InvalidArgument(
            "expected exactly one of the inputs 'text_input' and 'messages', got "
            + ("both" if text is not None else "neither")
        )
    if messages is not None:
        if render is None:
            raise InvalidArgument("input 'messages': this model has no chat template")
        prompt, chat = render(parse_messages(messages)), True
    else:
        assert text is not None
        prompt, chat = text, False
    sampling = _one_string(inputs, "sampling_parameters")
    params = parse_sampling(sampling, default_max_tokens)
    # parse_sampling has read it as a JSON object already.
    given = json.loads(sampling).get("max_tokens") is not None if sampling else False
    return GenerateRequest(
        prompt=prompt,
        chat=chat,
        sampling=params,
        max_tokens_given=given,
        stream=_flag(inputs, "stream"),
        exclude_input=_flag(inputs, "exclude_input_in_output"),
        return_input_tokens=_flag(inputs, "return_num_input_tokens"),
        return_output_tokens=_flag(inputs, "return_num_output_tokens"),
        return_finish_reason=_flag(inputs, "return_finish_reason"),
    )
