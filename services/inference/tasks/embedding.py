"""Embedding models (`task: embedding`): BYTES `text` [n] in, FP32 `embedding` [n, d] and
UINT32 `num_input_tokens` [n] (each text's tokens as the model ran them, no padding) out.

The version directory holds `model.onnx` (input_ids, attention_mask int64 [batch, seq]
-> embedding FP32 [batch, d], pooled and normalised in the graph) and the Hugging Face
`tokenizer.json`. Texts are tokenized here, merged across requests by a TextBatcher,
padded to the longest text of the batch with the attention mask, and run on one
ONNX Runtime session (runtime.create_session: CUDA where it exists).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Encoding, Tokenizer

from services.common.datatypes import by_name
from services.common.errors import InvalidArgument, ServiceError
from services.common.names import echo
from services.inference.config import ModelConfig
from services.inference.runtime import (
    LoadError,
    Signature,
    TensorSpec,
    create_session,
    signature_of,
)
from services.inference.stats import ModelStats
from services.inference.tasks import RequestContext, StreamPart, TaskBackend, Tensors
from services.inference.tasks.embedding_metrics import EmbeddingMetrics
from services.inference.tasks.text_batcher import TextBatcher, TextJob

TEXT = "text"
EMBEDDING = "embedding"
# Triton vLLM's name for a prompt's token count, which the gateway's /v1 usage reads.
NUM_INPUT_TOKENS = "num_input_tokens"
# Request parameter: false asks for INVALID_ARGUMENT instead of cutting a long text.
TRUNCATE_PARAM = "truncate"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
# Graph inputs the runner feeds; token_type_ids (BERT exports often keep it) gets zeros.
_IDS, _MASK, _TYPES = "input_ids", "attention_mask", "token_type_ids"
_WARMUP_TEXT = "warm-up"


@dataclass(frozen=True)
class Embedded:
    """One request's vectors [n, d] and each text's token count, UINT32 [n]."""

    vectors: np.ndarray
    tokens: np.ndarray


class EmbeddingRunner:
    """Tokenize, pad and run batches of texts; blocking, on the batcher's thread."""

    def __init__(
        self,
        session: ort.InferenceSession,
        tokenizer: Tokenizer,
        max_length: int,
        chunk: int,
        metrics: EmbeddingMetrics | None = None,
    ) -> None:
        self._session = session
        self._metrics = metrics
        self._max_length = max_length
        self._chunk = chunk
        self._feeds_types = any(i.name == _TYPES for i in session.get_inputs())
        # Masked out, so any id would do; the tokenizer's own keeps the graph in range.
        self._pad_id = int((tokenizer.padding or {}).get("pad_id", 0))
        # The file's own padding (to a fixed length) and truncation would change the
        # vectors; padding is per batch here, truncation at the configured length.
        self._cut = Tokenizer.from_str(tokenizer.to_str())
        self._cut.no_padding()
        self._cut.enable_truncation(max_length)
        # Without truncation, to count a text's tokens when the request refuses cutting.
        self._whole = Tokenizer.from_str(tokenizer.to_str())
        self._whole.no_padding()
        self._whole.no_truncation()

    def run(self, jobs: Sequence[TextJob[Embedded]]) -> list[Embedded | ServiceError]:
        """One outcome per job: its rows and token counts, or the error of a text too
        long for it."""
        outcomes: list[Embedded | ServiceError | None] = []
        encodings: list[Encoding] = []
        for job in jobs:
            encoded = (self._cut if job.truncate else self._whole).encode_batch(job.texts)
            error = None if job.truncate else self._too_long(encoded)
            outcomes.append(error)
            if error is None:
                encodings += encoded
        vectors = self.embed(encodings)
        start = 0
        for i, job in enumerate(jobs):
            if outcomes[i] is None:
                end = start + len(job.texts)
                # The encodings are unpadded: padding is added per session run.
                tokens = np.array([len(e.ids) for e in encodings[start:end]], np.uint32)
                outcomes[i] = Embedded(vectors[start:end], tokens)
                if self._metrics is not None:
                    self._metrics.embedded(job.key_id, len(job.texts), int(tokens.sum()))
                start = end
        if self._metrics is not None and encodings:
            self._metrics.batch_texts.observe(len(encodings))
        return [o for o in outcomes if o is not None]

    def embed(self, encodings: Sequence[Encoding]) -> np.ndarray:
        """The vectors of encoded texts, at most `chunk` texts per session run."""
        parts = [
            self._run_padded(encodings[i : i + self._chunk])
            for i in range(0, len(encodings), self._chunk)
        ]
        if not parts:  # every job of the batch was refused: nothing to run
            return np.zeros((0, 0), np.float32)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Truncated texts' vectors (the warm-up and the unit tests)."""
        return self.embed(self._cut.encode_batch(texts))

    def _too_long(self, encoded: Sequence[Encoding]) -> InvalidArgument | None:
        for index, encoding in enumerate(encoded):
            if len(encoding.ids) > self._max_length:
                return InvalidArgument(
                    f"text {index} has {len(encoding.ids)} tokens, expected at most "
                    f"max_length {self._max_length} (parameter '{TRUNCATE_PARAM}' is false)"
                )
        return None

    def _run_padded(self, encodings: Sequence[Encoding]) -> np.ndarray:
        longest = max(len(e.ids) for e in encodings)
        ids = np.full((len(encodings), longest), self._pad_id, np.int64)
        mask = np.zeros((len(encodings), longest), np.int64)
        for row, encoding in enumerate(encodings):
            ids[row, : len(encoding.ids)] = encoding.ids
            mask[row, : len(encoding.ids)] = 1
        feeds = {_IDS: ids, _MASK: mask}
        if self._feeds_types:
            feeds[_TYPES] = np.zeros_like(ids)
        (vectors,) = self._session.run([EMBEDDING], feeds)
        return np.asarray(vectors, dtype=np.float32)


class EmbeddingModel:
    """A loaded embedding model version: the TaskBackend the inference app calls."""

    decoupled = False

    def __init__(
        self,
        runner: EmbeddingRunner,
        signature: Signature,
        provider: str,
        config: ModelConfig,
        metrics: EmbeddingMetrics,
    ) -> None:
        self.signature = signature
        self.provider = provider
        # The model's own series (services.inference.tasks.metrics adds its labels).
        self.metrics_registry = metrics.registry
        # Runs and texts per run, in the model's ModelStatistics (LoadedModel takes it).
        self.stats = ModelStats()
        self._width = signature.outputs[0].shape[-1]
        settings = config.embedding
        self._batcher = TextBatcher(
            runner.run,
            max_batch_size=settings.max_batch_size,
            max_queue_delay_us=settings.max_queue_delay_us,
            max_queue_size=settings.max_queue_size,
            name="embedding",
            stats=self.stats,
        )

    @property
    def depth(self) -> int:
        """Requests waiting to run."""
        return self._batcher.depth

    @property
    def batcher(self) -> TextBatcher[Embedded]:
        """The queue and worker (its run counters show how texts were batched)."""
        return self._batcher

    def start(self) -> None:
        """Start the batcher's worker; on the event loop."""
        self._batcher.start()

    async def submit(
        self, inputs: Tensors, deadline: float | None, context: RequestContext
    ) -> tuple[Tensors, int]:
        """The request's texts embedded, batched with other requests' texts, and their
        token counts."""
        truncate = truncate_parameter(context.parameters)
        texts = [str(t) for t in inputs[TEXT].reshape(-1).tolist()]
        if not texts:
            empty = {EMBEDDING: np.zeros((0, self._width), np.float32)}
            return empty | {NUM_INPUT_TOKENS: np.zeros(0, np.uint32)}, 0
        done, queue_ns = await self._batcher.submit(texts, truncate, deadline, context.key_id)
        return {EMBEDDING: done.vectors, NUM_INPUT_TOKENS: done.tokens}, queue_ns

    async def stream(
        self, inputs: Tensors, deadline: float | None, context: RequestContext
    ) -> AsyncIterator[StreamPart]:
        """One final response: an embedding model is not decoupled."""
        outputs, _ = await self.submit(inputs, deadline, context)
        yield StreamPart(outputs, final=True)

    async def close(self) -> None:
        """Finish the queued requests, then stop the worker thread."""
        await self._batcher.close()


def truncate_parameter(parameters: Mapping[str, object]) -> bool:
    """The request's `truncate` parameter (default true); InvalidArgument if not a bool."""
    value = parameters.get(TRUNCATE_PARAM, True)
    if not isinstance(value, bool):
        shown = echo(value) if isinstance(value, str) else str(value)
        raise InvalidArgument(
            f"parameter '{TRUNCATE_PARAM}': got {type(value).__name__} {shown}, expected a bool"
        )
    return value


def open_embedding(directory: Path, config: ModelConfig) -> TaskBackend:
    """Load the tokenizer and the session, check the graph's I/O and run one warm-up
    text; blocking, raises LoadError with the reason."""
    tokenizer = load_tokenizer(directory)
    session = create_session(directory / MODEL_FILE, config)
    width = _check_graph(signature_of(session))
    metrics = EmbeddingMetrics()
    settings = config.embedding
    runner = EmbeddingRunner(
        session, tokenizer, settings.max_length, settings.max_batch_size, metrics
    )
    try:
        warm = runner.embed_texts([_WARMUP_TEXT])
    except Exception as exc:  # noqa: BLE001 - ORT raises bare RuntimeError/Fail types
        raise LoadError(f"the warm-up text failed to run: {exc}") from exc
    if warm.ndim != 2 or warm.shape[0] != 1 or (width > 0 and warm.shape[1] != width):
        raise LoadError(
            f"output '{EMBEDDING}' has shape {list(warm.shape)} for one text, "
            f"expected [1, {width if width > 0 else 'd'}]"
        )
    # `embedding` first: a client that reads the first output still gets the vectors.
    signature = Signature(
        (TensorSpec(TEXT, by_name("BYTES", tensor=TEXT), (-1,), also=((-1, 1),)),),
        (
            TensorSpec(EMBEDDING, by_name("FP32", tensor=EMBEDDING), (-1, int(warm.shape[1]))),
            TensorSpec(NUM_INPUT_TOKENS, by_name("UINT32", tensor=NUM_INPUT_TOKENS), (-1,)),
        ),
    )
    return EmbeddingModel(runner, signature, session.get_providers()[0], config, metrics)


def load_tokenizer(directory: Path) -> Tokenizer:
    """The version's Hugging Face tokenizer; LoadError when it is missing or unreadable."""
    path = directory / TOKENIZER_FILE
    if not path.is_file():
        raise LoadError(
            f"{TOKENIZER_FILE} is missing: an embedding model's version directory holds "
            f"{MODEL_FILE} and the Hugging Face {TOKENIZER_FILE}"
        )
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # noqa: BLE001 - tokenizers raises a bare Exception
        raise LoadError(f"{TOKENIZER_FILE} could not be read: {exc}") from exc


def _check_graph(graph: Signature) -> int:
    """The embedding width the graph declares (-1 when dynamic); LoadError when its
    inputs or output are not those of an embedding model."""
    inputs = {spec.name: spec for spec in graph.inputs}
    outputs = {spec.name: spec for spec in graph.outputs}
    expected = (
        f"inputs {_IDS}, {_MASK} (INT64 [batch, seq]) and output {EMBEDDING} (FP32 [batch, d])"
    )
    got = f"inputs {sorted(inputs)}, outputs {sorted(outputs)}"
    extra = set(inputs) - {_IDS, _MASK, _TYPES}
    if _IDS not in inputs or _MASK not in inputs or EMBEDDING not in outputs or extra:
        raise LoadError(f"{MODEL_FILE} has {got}, expected {expected}")
    for name in (_IDS, _MASK, *([_TYPES] if _TYPES in inputs else [])):
        spec = inputs[name]
        if spec.datatype.name != "INT64" or len(spec.shape) != 2:
            raise LoadError(
                f"{MODEL_FILE} input {name} is {spec.datatype.name} {list(spec.shape)}, "
                f"expected {expected}"
            )
    out = outputs[EMBEDDING]
    if out.datatype.name != "FP32" or len(out.shape) != 2:
        raise LoadError(
            f"{MODEL_FILE} output {EMBEDDING} is {out.datatype.name} {list(out.shape)}, "
            f"expected {expected}"
        )
    return out.shape[1]
