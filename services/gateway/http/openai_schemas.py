"""The OpenAI request bodies the /v1 routes take, checked with pydantic.

Fields OpenAI clients send by default and that change nothing here (`user`,
`n: 1`, `logprobs: false`, zero penalties) are taken; fields that would change
the answer in a way the backends cannot (`n > 1`, log probabilities, tools,
penalties) are refused by name rather than ignored. Every refusal is a 400 that
names the field, what was expected and what came.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

import orjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from services.gateway.http.openai_errors import BadField

MAX_STOP = 4
# Integer bounds: JSON numbers past 64 bits arrive as floats, and the backends take
# counts as int32 and seeds as non-negative int64.
MAX_INT = (1 << 31) - 1
MAX_SEED = (1 << 63) - 1
_ECHO = 64
T = TypeVar("T", bound="OpenAIRequest")


def _integral(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


# An integer, written as JSON may write one (5 or 5.0; JSON Schema counts both).
Int = Annotated[int, BeforeValidator(_integral)]


def _echo(value: object) -> str:
    text = orjson.dumps(value, default=str).decode()
    return text if len(text) <= _ECHO else text[:_ECHO] + "..."


def _strings(value: Any, what: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ValueError(f"expected {what}, got {_echo(value)}")


class StreamOptions(BaseModel):
    """`stream_options`: whether the last chunk carries the usage."""

    model_config = ConfigDict(extra="ignore", strict=True)
    include_usage: bool = False


class OpenAIRequest(BaseModel):
    """What every /v1 request body has: the model, and fields taken and dropped."""

    model_config = ConfigDict(extra="ignore", strict=True)
    model: str = Field(min_length=1, max_length=512)
    user: str | None = None


class EmbeddingRequest(OpenAIRequest):
    """POST /v1/embeddings."""

    input: list[str]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Int | None = Field(default=None, ge=1, le=MAX_INT)

    @field_validator("input", mode="before")
    @classmethod
    def _input(cls, value: Any) -> list[str]:
        texts = _strings(value, "a string or an array of strings")
        if not texts:
            raise ValueError("expected at least one string, got an empty array")
        return texts


class _Sampling(OpenAIRequest):
    """The options completions and chat share, passed on as sampling_parameters."""

    max_tokens: Int | None = Field(default=None, ge=1, le=MAX_INT)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: Int | None = Field(default=None, ge=0, le=MAX_INT)
    seed: Int | None = Field(default=None, ge=0, le=MAX_SEED)
    stop: list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Int = 1
    presence_penalty: float = 0
    frequency_penalty: float = 0
    logit_bias: dict[str, Any] | None = None

    @field_validator("stop", mode="before")
    @classmethod
    def _stop(cls, value: Any) -> list[str] | None:
        if value is None:
            return None
        stops = _strings(value, "a string or an array of strings")
        if len(stops) > MAX_STOP:
            raise ValueError(f"expected at most {MAX_STOP} sequences, got {len(stops)}")
        return stops

    def unsupported(self) -> None:
        """Refuse the options that would change the answer in ways not served."""
        if self.n != 1:
            raise BadField("n", f"'n': expected 1 (one choice per request), got {self.n}")
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name) != 0:
                raise BadField(
                    name, f"'{name}': expected 0 (not supported), got {getattr(self, name)}"
                )
        if self.logit_bias:
            raise BadField("logit_bias", "'logit_bias': expected none (not supported), got a map")

    def sampling(self) -> dict[str, Any]:
        """The backend's sampling_parameters: only what the client set (the rest is the
        model's default, greedy)."""
        out: dict[str, Any] = {}
        for name in ("max_tokens", "temperature", "top_p", "top_k", "seed", "stop"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class CompletionRequest(_Sampling):
    """POST /v1/completions."""

    prompt: str
    echo: bool = False
    logprobs: Int | None = None
    best_of: Int | None = None
    suffix: str | None = None

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt(cls, value: Any) -> str:
        prompts = _strings(value, "a string")
        if len(prompts) != 1:
            raise ValueError(f"expected one prompt, got {len(prompts)}")
        return prompts[0]

    def unsupported(self) -> None:
        super().unsupported()
        if self.echo:
            raise BadField("echo", "'echo': expected false (not supported), got true")
        if self.logprobs:
            raise BadField(
                "logprobs", f"'logprobs': expected none (not supported), got {self.logprobs}"
            )
        if self.best_of not in (None, 1):
            raise BadField("best_of", f"'best_of': expected 1, got {self.best_of}")
        if self.suffix:
            raise BadField("suffix", "'suffix': expected none (not supported), got a string")


class ChatMessage(BaseModel):
    """One message; content as a string or as text parts."""

    model_config = ConfigDict(extra="ignore", strict=True)
    role: Literal["system", "developer", "user", "assistant"]
    content: str

    @field_validator("content", mode="before")
    @classmethod
    def _content(cls, value: Any) -> str:
        if isinstance(value, str):
            return value
        if isinstance(value, list):
            texts = []
            for part in value:
                if not isinstance(part, dict) or part.get("type") != "text":
                    raise ValueError(f"expected text parts, got {_echo(part)}")
                text = part.get("text")
                if not isinstance(text, str):
                    raise ValueError(f"expected a string 'text', got {_echo(text)}")
                texts.append(text)
            return "".join(texts)
        raise ValueError(f"expected a string or an array of text parts, got {_echo(value)}")


class ChatRequest(_Sampling):
    """POST /v1/chat/completions."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: Int | None = Field(default=None, ge=1, le=MAX_INT)
    logprobs: bool = False
    top_logprobs: Int | None = None
    tools: list[Any] | None = None
    response_format: dict[str, Any] | None = None

    def unsupported(self) -> None:
        super().unsupported()
        if self.logprobs or self.top_logprobs:
            raise BadField("logprobs", "'logprobs': expected false (not supported), got true")
        if self.tools:
            raise BadField("tools", "'tools': expected none (tool calls are not supported)")
        kind = (self.response_format or {}).get("type", "text")
        if kind != "text":
            raise BadField(
                "response_format", f"'response_format': expected type 'text', got {_echo(kind)}"
            )

    def sampling(self) -> dict[str, Any]:
        out = super().sampling()
        if self.max_completion_tokens is not None:
            out["max_tokens"] = self.max_completion_tokens
        return out

    def rendered(self) -> list[dict[str, str]]:
        """The messages as the backend's `messages` input takes them ("developer" is the
        newer name of "system")."""
        return [
            {"role": "system" if m.role == "developer" else m.role, "content": m.content}
            for m in self.messages
        ]


def parse(kind: type[T], body: bytes) -> T:
    """The request in `body`, checked; BadField naming the first wrong field."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadField(None, "request body: expected a JSON object, got malformed JSON") from None
    if not isinstance(data, dict):
        raise BadField(None, f"request body: expected a JSON object, got {_echo(data)}")
    try:
        request = kind.model_validate(data)
    except ValidationError as exc:
        raise _bad_field(exc) from None
    if isinstance(request, _Sampling):
        request.unsupported()
    return request


def _bad_field(exc: ValidationError) -> BadField:
    error = exc.errors(include_url=False)[0]
    loc = error["loc"]
    param = ".".join(str(p) for p in loc) or None
    named = f"'{param}'" if param else "request body"
    if error["type"] == "missing":
        return BadField(param, f"{named}: expected a value, got none")
    if error["type"] == "too_short":
        least = (error.get("ctx") or {}).get("min_length", 1)
        return BadField(
            param, f"{named}: expected at least {least}, got {_echo(error.get('input'))}"
        )
    message = str(error["msg"])
    if message.startswith("Value error, "):
        return BadField(param, f"{named}: {message.removeprefix('Value error, ')}")
    expected = message.removeprefix("Input should be ")
    return BadField(param, f"{named}: expected {expected}, got {_echo(error.get('input'))}")
