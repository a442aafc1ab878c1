"""A model's serving configuration: `<repo>/<model>/config.yaml`, or registry labels."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from services.common.errors import InvalidArgument
from services.common.yamltext import load_mapping

PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
# A warm-up tensor is built in memory for every instance; keep config typos harmless.
MAX_WARMUP_ELEMENTS = 1 << 24


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DynamicBatching(_Strict):
    """The dynamic batcher: merge queued requests along the batch dimension."""

    enabled: bool = True
    max_batch_size: int = Field(32, ge=1)
    max_queue_delay_us: int = Field(0, ge=0)
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_size: int = Field(1024, ge=1)
    # Per instance: reused merge buffers (one per row shape) beyond it are dropped, LRU.
    max_buffer_bytes: int = Field(128 << 20, ge=0)


class CudaOptions(_Strict):
    """CUDAExecutionProvider options, with safe defaults."""

    device_id: int = Field(0, ge=0)
    gpu_mem_limit: int | None = Field(None, gt=0, description="Bytes; None means no limit.")
    cudnn_conv_algo_search: Literal["EXHAUSTIVE", "HEURISTIC", "DEFAULT"] = "HEURISTIC"
    arena_extend_strategy: Literal["kNextPowerOfTwo", "kSameAsRequested"] = "kSameAsRequested"
    # Keep outputs on the GPU until they are copied out once (IO binding).
    io_binding: bool = True
    # Assemble merged batches in pinned (page-locked) host memory, where ORT allows.
    pinned_inputs: bool = True
    # Strict placement: ORT's `session.disable_cpu_ep_fallback`, so the session fails to
    # load if any node would run on the CPU (even shape arithmetic ORT keeps there).
    # Without it, require_cuda fails loads only for compute nodes placed on the CPU.
    strict: bool = False


class TensorRtOptions(_Strict):
    """TensorrtExecutionProvider options; used only when `tensorrt` is a provider."""

    fp16: bool = False
    # Built engines (and the timing cache) are kept here; a persistent volume, or every
    # pod start rebuilds them (minutes for large models).
    engine_cache_dir: str | None = None
    timing_cache: bool = True


class Threads(_Strict):
    """ONNX Runtime thread pools; 0 means derived from the cores and instances."""

    intra_op: int = Field(0, ge=0)
    inter_op: int = Field(0, ge=0)
    # Idle pool threads busy-wait for the next op by default in ONNX Runtime; that
    # takes cores from the event loop and the other instances. None: spin only when
    # one instance has every core to itself (intra_op x instances <= cores - 1).
    spinning: bool | None = None


WarmupValue = bool | int | float | str


class WarmupInput(_Strict):
    """One input of a warm-up sample: its full shape, every element set to `value`."""

    shape: tuple[int, ...]
    value: WarmupValue = 0

    @field_validator("shape")
    @classmethod
    def _shape(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(d < 0 for d in value):
            raise ValueError(f"dimensions must be 0 or more, got {list(value)}")
        if math.prod(value) > MAX_WARMUP_ELEMENTS:
            raise ValueError(f"at most {MAX_WARMUP_ELEMENTS} elements, got {math.prod(value)}")
        return value


class WarmupSample(_Strict):
    """One warm-up request, as in Triton's `model_warmup`: a value for every input."""

    name: str = ""
    inputs: dict[str, WarmupInput]


class EmbeddingConfig(_Strict):
    """`task: embedding`: BYTES `text` [n] in, FP32 `embedding` [n, d] out.

    The version directory holds `model.onnx` (input_ids, attention_mask -> embedding)
    and the Hugging Face `tokenizer.json`."""

    # Tokens per text; longer texts are cut to it unless the request asks for an error.
    max_length: int = Field(256, ge=1, le=8192)
    # Texts merged into one run, padded to the longest; waiting beyond it is bounded.
    max_batch_size: int = Field(32, ge=1, le=1024)
    max_queue_delay_us: int = Field(2000, ge=0)
    max_queue_size: int = Field(1024, ge=1)


class GenerateConfig(_Strict):
    """`task: generate`: text in, text out, token by token (Triton's vLLM backend I/O).

    The version directory holds the decoder `model.onnx` (+ `model.onnx.data`) with a KV
    cache, as onnxruntime-genai's model builder writes it, and the tokenizer files."""

    # Sequences decoded together in one step (KV cache slots).
    max_sequences: int = Field(16, ge=1, le=256)
    # Prompt plus generated tokens of one sequence.
    max_context: int = Field(2048, ge=16, le=131072)
    # KV cache budget in tokens over all sequences; 0 means max_sequences * max_context.
    cache_tokens: int = Field(0, ge=0)
    # Requests waiting for a slot or for cache; beyond it RESOURCE_EXHAUSTED.
    max_queue_size: int = Field(256, ge=1)
    # max_tokens when a request does not say.
    default_max_tokens: int = Field(256, ge=1)


class ModelConfig(_Strict):
    """How one model is served. Every key is optional."""

    # What the version's files are: a plain tensor model, or a text model whose
    # tokenizer runs here.
    task: Literal["tensor", "embedding", "generate"] = "tensor"
    embedding: EmbeddingConfig = EmbeddingConfig()
    generate: GenerateConfig = GenerateConfig()
    dynamic_batching: DynamicBatching = DynamicBatching()
    instances: int = Field(1, ge=1, le=64)
    # On the CPU, a request that finds the queue empty runs on the event loop instead
    # of an instance's thread while the model's recent runs predict under this many
    # µs for its rows: the hand-over to a thread and back costs more than a small
    # model's run. 0: every run on an instance's thread. Never on CUDA or TensorRT.
    inline_run_us: int = Field(200, ge=0, le=10_000)
    # Tried in order; "auto" means CUDA where ONNX Runtime has it, else CPU.
    providers: tuple[str, ...] = ("auto",)
    # Fail the load instead of falling back to CPU when CUDA was asked for.
    require_cuda: bool = False
    cuda: CudaOptions = CudaOptions()
    tensorrt: TensorRtOptions = TensorRtOptions()
    threads: Threads = Threads()
    # Run on every instance before the version takes traffic; a failure is a load
    # failure. None: one sample of zeros, 1 for each dynamic dimension. []: none.
    warmup: tuple[WarmupSample, ...] | None = None

    @field_validator("providers", mode="before")
    @classmethod
    def _providers(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        allowed = {"auto", *PROVIDER_ALIASES}
        if not isinstance(value, list | tuple):
            raise ValueError(f"expected a provider name or a list of them, got {value!r:.40}")
        for item in value:
            if not isinstance(item, str) or item not in allowed:
                raise ValueError(f"unknown provider '{item}', expected one of {sorted(allowed)}")
        return tuple(value)


def parse_config(text: str, *, source: str) -> ModelConfig:
    """A ModelConfig from YAML text; InvalidArgument naming the bad key."""
    data = load_mapping(text, source=source)
    try:
        return ModelConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise InvalidArgument(f"{source}: {problems}") from None


def load_config(path: Path) -> ModelConfig:
    """The config in `path`, or the defaults when there is no such file."""
    if not path.is_file():
        return ModelConfig()
    return parse_config(path.read_text(), source=str(path))
