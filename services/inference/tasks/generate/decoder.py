"""The decoder model and its KV cache: the one place that knows where tensors live.

The cache is one buffer per layer and kind, [slots, kv_heads, max_context, head_dim].
onnxruntime-genai's GroupQueryAttention writes the new keys and values into `present`
in place when `past` and `present` are bound to the same memory, so a step costs no
cache copy. A slot's rows are a contiguous batch-1 view; slots 0..n-1 are the batch
of n, which is why the engine keeps its active sequences in the first slots.
"""

from __future__ import annotations

import json
import mmap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from services.inference.runtime import LoadError


@dataclass(frozen=True)
class DecoderShape:
    """What genai_config.json says about the decoder's inputs, outputs and cache."""

    layers: int
    kv_heads: int
    head_dim: int
    vocab_size: int
    context_length: int
    eos_token_ids: tuple[int, ...]
    filename: str = "model.onnx"
    input_ids: str = "input_ids"
    attention_mask: str = "attention_mask"
    past_key: str = "past_key_values.%d.key"
    past_value: str = "past_key_values.%d.value"
    logits: str = "logits"
    present_key: str = "present.%d.key"
    present_value: str = "present.%d.value"


def read_shape(directory: Path) -> DecoderShape:
    """The decoder's shape from the model builder's genai_config.json."""
    path = directory / "genai_config.json"
    try:
        model = json.loads(path.read_text())["model"]
        decoder = model["decoder"]
        inputs, outputs = decoder.get("inputs", {}), decoder.get("outputs", {})
        eos = model["eos_token_id"]
        return DecoderShape(
            layers=int(decoder["num_hidden_layers"]),
            kv_heads=int(decoder["num_key_value_heads"]),
            head_dim=int(decoder["head_size"]),
            vocab_size=int(model["vocab_size"]),
            context_length=int(model.get("context_length", 0)),
            eos_token_ids=tuple(int(e) for e in (eos if isinstance(eos, list) else [eos])),
            filename=str(decoder.get("filename", "model.onnx")),
            input_ids=inputs.get("input_ids", "input_ids"),
            attention_mask=inputs.get("attention_mask", "attention_mask"),
            past_key=inputs.get("past_key_names", "past_key_values.%d.key"),
            past_value=inputs.get("past_value_names", "past_key_values.%d.value"),
            logits=outputs.get("logits", "logits"),
            present_key=outputs.get("present_key_names", "present.%d.key"),
            present_value=outputs.get("present_value_names", "present.%d.value"),
        )
    except FileNotFoundError:
        raise LoadError("a generate model needs genai_config.json beside model.onnx") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise LoadError(
            f"genai_config.json is not a decoder config: missing or bad {exc}"
        ) from None


class KvCache:
    """Per-layer key and value buffers on the host, one row per slot.

    The buffers are anonymous memory maps: pages are committed as tokens are written,
    and a slot's pages go back to the system when its sequence leaves (madvise), so
    resident memory follows the tokens in use, within the cache budget, not slots x
    max_context."""

    device = "cpu"
    device_id = 0

    def __init__(self, shape: DecoderShape, slots: int, context: int) -> None:
        self.dims = (slots, shape.kv_heads, context, shape.head_dim)
        # Bytes from one slot's rows to the next; 4 bytes a float.
        self.slot_bytes = shape.kv_heads * context * shape.head_dim * 4
        # Private: MADV_DONTNEED frees private anonymous pages (shared ones would stay).
        flags = mmap.MAP_PRIVATE | getattr(mmap, "MAP_ANONYMOUS", 0)
        size = slots * self.slot_bytes
        self._maps = [mmap.mmap(-1, size, flags=flags) for _ in range(2 * shape.layers)]
        self.buffers = [np.frombuffer(m, np.float32).reshape(self.dims) for m in self._maps]
        # Key and value of layer l at 2l and 2l + 1.
        self.pointers = [buffer.ctypes.data for buffer in self.buffers]

    def release(self, first: int, count: int) -> None:
        """Give the pages of slots first..first+count-1 back; they read as zeros after."""
        advice = getattr(mmap, "MADV_DONTNEED", None)
        if count <= 0 or advice is None or self.slot_bytes % mmap.PAGESIZE:
            return
        for m in self._maps:
            m.madvise(advice, first * self.slot_bytes, count * self.slot_bytes)

    @property
    def nbytes(self) -> int:
        """Bytes the buffers may grow to."""
        return len(self.pointers) * self.dims[0] * self.slot_bytes

    def bind(self, binding: ort.IOBinding, shape: DecoderShape, first: int, count: int) -> None:
        """Bind slots first..first+count-1 as both past and present of every layer."""
        dims = [count, *self.dims[1:]]
        for layer in range(shape.layers):
            for kind, (past, present) in enumerate(
                ((shape.past_key, shape.present_key), (shape.past_value, shape.present_value))
            ):
                ptr = self.pointers[2 * layer + kind] + first * self.slot_bytes
                where = (self.device, self.device_id, np.float32, dims, ptr)
                binding.bind_input(past % layer, *where)
                binding.bind_output(present % layer, *where)

    def move(self, source: int, target: int, length: int) -> None:
        """Copy a sequence's first `length` cache rows from one slot to another."""
        for buffer in self.buffers:
            buffer[target, :, :length] = buffer[source, :, :length]


class DeviceKvCache(KvCache):
    """The same buffers as OrtValues on an ONNX Runtime device (CUDA), so a step moves
    no cache over the bus. A slot moves by an Identity run bound to device memory at
    both ends: ORT's own copy, no CUDA library of ours."""

    def __init__(
        self, shape: DecoderShape, slots: int, context: int, device: str, device_id: int
    ) -> None:
        self.device, self.device_id = device, device_id
        self.dims = (slots, shape.kv_heads, context, shape.head_dim)
        self.slot_bytes = shape.kv_heads * context * shape.head_dim * 4
        self.values = [
            ort.OrtValue.ortvalue_from_shape_and_type(
                list(self.dims), np.float32, device, device_id
            )
            for _ in range(2 * shape.layers)
        ]
        self.pointers = [value.data_ptr() for value in self.values]
        self._copy = _identity_session(self.slot_bytes // 4, device, device_id)

    def release(self, first: int, count: int) -> None:
        """Device memory stays allocated: the pool is sized once."""

    def move(self, source: int, target: int, length: int) -> None:
        """Copy the source slot's rows (all of them: one contiguous run) to the target."""
        elements = [self.slot_bytes // 4]
        for ptr in self.pointers:
            binding = self._copy.io_binding()
            at = (self.device, self.device_id, np.float32, elements)
            binding.bind_input("x", *at, ptr + source * self.slot_bytes)
            binding.bind_output("y", *at, ptr + target * self.slot_bytes)
            self._copy.run_with_iobinding(binding)


def _identity_session(elements: int, device: str, device_id: int) -> ort.InferenceSession:
    import onnx
    import onnx.helper as oh

    graph = oh.make_graph(
        [oh.make_node("Identity", ["x"], ["y"])],
        "copy",
        [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [elements])],
        [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [elements])],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    model.ir_version = 8
    if device == "cpu":
        providers: list[Any] = ["CPUExecutionProvider"]
    else:
        providers = [("CUDAExecutionProvider", {"device_id": str(device_id)})]
    return ort.InferenceSession(model.SerializeToString(), providers=providers)


class Decoder:
    """Runs prefill (one slot) and decode steps (slots 0..n-1) over the shared cache."""

    def __init__(
        self,
        session: ort.InferenceSession,
        shape: DecoderShape,
        slots: int,
        context: int,
        device: str = "cpu",
        device_id: int = 0,
    ) -> None:
        self.session = session
        self.shape = shape
        self.context = context
        # The one place that decides where the cache lives: the host for CPU sessions
        # (memory maps, committed as written), the session's device otherwise.
        self.cache: KvCache = (
            KvCache(shape, slots, context)
            if device == "cpu"
            else DeviceKvCache(shape, slots, context, device, device_id)
        )

    def _run(self, ids: np.ndarray, mask: np.ndarray, first: int) -> np.ndarray:
        binding = self.session.io_binding()
        binding.bind_cpu_input(self.shape.input_ids, ids)
        binding.bind_cpu_input(self.shape.attention_mask, mask)
        self.cache.bind(binding, self.shape, first, ids.shape[0])
        binding.bind_output(self.shape.logits, "cpu")
        self.session.run_with_iobinding(binding)
        # Outputs come in bind order; the logits were bound last. The builder may or may
        # not cut them to the last position: [B, 1, V] or [B, S, V].
        logits = binding.get_outputs()[-1].numpy()
        return np.asarray(logits[:, -1], dtype=np.float32)

    def prefill(self, slot: int, tokens: list[int]) -> np.ndarray:
        """Logits [V] after a prompt, its cache written in `slot` from position 0."""
        return self.extend(slot, tokens, 0)

    def extend(self, slot: int, tokens: list[int], past: int) -> np.ndarray:
        """Logits [V] after `tokens` fed to `slot`, whose cache holds `past` tokens (a
        prompt in chunks: the same logits as one prefill of the whole)."""
        ids = np.asarray(tokens, dtype=np.int64)[None]
        mask = np.ones((1, past + len(tokens)), dtype=np.int64)
        return self._run(ids, mask, slot)[0]

    def decode(self, tokens: list[int], lengths: list[int]) -> np.ndarray:
        """Logits [n, V] for one new token each in slots 0..n-1, whose caches hold
        `lengths` tokens; masks are right-padded to the longest."""
        count = len(tokens)
        ids = np.asarray(tokens, dtype=np.int64)[:, None]
        total = max(lengths) + 1
        mask = (np.arange(total)[None, :] <= np.asarray(lengths)[:, None]).astype(np.int64)
        return self._run(ids, mask, 0)[:count]
