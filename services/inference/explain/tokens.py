"""Token attributions for text models: which tokens of the input made the output.

The text is tokenized with the version's own tokenizer (tokenizer.json), with each
token's character span, so a perturbed text is the input with some spans cut out:
the model sees real text, tokenized as it always is, and nothing needs its ids.

What is explained is one number per text:
- an embedding model (`task: embedding`): the cosine similarity of the text's
  embedding to that of `parameters.reference_text`; there is no class (target 0);
- any other model with one BYTES input: the output element `target` (the largest
  of the full text's output when the request leaves it unset).

Modes (`parameters.mode`):
- `leave_one_out` (default): attribution_i = value(text) - value(text without token
  i), n_tokens + 2 evaluations (+1 for the reference embedding). Leave-one-out is
  not additive: a token whose meaning another token repeats gets little, so the
  attributions need not sum to output_value - base_value; error_estimate is that
  gap, reported rather than hidden.
- `kernel_shap`: KernelSHAP over the tokens as present/absent binary features
  against the all-absent text (shap.KernelExplainer), which is additive up to its
  sampling error; it spends up to max_evaluations.

base_value is the value of the empty text (every token removed).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.names import echo
from services.inference.explain.evaluate import Evaluator, resolve_target
from services.inference.explain.job import ExplainJob, Explanation
from services.inference.explain.kernel_shap import load_shap, on_loop, run_shap
from services.inference.explain.params import int_param

TOKENIZER_FILE = "tokenizer.json"
LEAVE_ONE_OUT = "leave_one_out"
KERNEL_SHAP = "kernel_shap"
MODES = (LEAVE_ONE_OUT, KERNEL_SHAP)
REFERENCE_PARAM = "reference_text"
MODE_PARAM = "mode"
SEED_PARAM = "seed"
EMBEDDING_TASK = "embedding"
# Texts in the one call that evaluates them: the full text and the empty one.
_FIXED = 2


@dataclass(frozen=True)
class Tokens:
    """The text's tokens (special tokens left out) and their character spans."""

    text: str
    strings: list[str]
    spans: list[tuple[int, int]]

    def keeping(self, mask: Sequence[bool] | np.ndarray) -> str:
        """The text with the spans of the tokens not kept cut out."""
        parts: list[str] = []
        start = 0
        for keep, (begin, end) in zip(mask, self.spans, strict=True):
            if not keep:
                parts.append(self.text[start:begin])
                start = max(start, end)
        parts.append(self.text[start:])
        return "".join(parts)

    def without(self, index: int) -> str:
        """The text with token `index` cut out."""
        begin, end = self.spans[index]
        return self.text[:begin] + self.text[end:]


async def explain_tokens(job: ExplainJob, evaluator: Evaluator) -> Explanation:
    """Attributions over the tokens of the request's text, shaped [n_tokens]."""
    name, text = _text_input(job)
    _check_output(job)
    mode = _mode(job)
    tokenizer = await asyncio.to_thread(_load_tokenizer, job.model.path.parent)
    tokens = await asyncio.to_thread(tokenize, tokenizer, text)
    n = len(tokens.strings)
    embedding = job.model.config.task == EMBEDDING_TASK
    reference = _reference(job) if embedding else None
    if mode == LEAVE_ONE_OUT:
        needed = n + _FIXED + (1 if embedding else 0)
        if needed > job.max_evaluations:
            raise InvalidArgument(
                f"max_evaluations: method 'tokens' ({LEAVE_ONE_OUT}) needs {needed} "
                f"evaluations for {n} tokens, got max_evaluations {job.max_evaluations}"
            )
    score = _Scorer(job, evaluator, name, reference)
    if mode == LEAVE_ONE_OUT:
        values, target = await score.values([text, "", *(tokens.without(i) for i in range(n))])
        full, base = values[0], values[1]
        attributions = full - values[_FIXED:]
    else:
        (full, base), target = await score.values([text, ""])
        attributions = await _kernel_shap(job, score, evaluator, tokens)
    return Explanation.additive(
        job,
        {name: attributions.astype(np.float64)},
        target=target,
        base_value=float(base),
        output_value=float(full),
        evaluations=evaluator.evaluations,
        tokens=list(tokens.strings),
    )


def tokenize(tokenizer: Tokenizer, text: str) -> Tokens:
    """The text's tokens as the model sees them, without padding, truncation or the
    special tokens ([CLS], [SEP]) the tokenizer adds around them; changes `tokenizer`'s
    padding and truncation (each explanation loads its own)."""
    tokenizer.no_padding()
    tokenizer.no_truncation()
    encoding = tokenizer.encode(text)
    strings: list[str] = []
    spans: list[tuple[int, int]] = []
    for token, special, (begin, end) in zip(
        encoding.tokens, encoding.special_tokens_mask, encoding.offsets, strict=True
    ):
        if not special and end > begin:
            strings.append(token)
            spans.append((begin, end))
    return Tokens(text, strings, spans)


class _Scorer:
    """Texts in, one explained value per text out, through the evaluator."""

    def __init__(
        self, job: ExplainJob, evaluator: Evaluator, name: str, reference: str | None
    ) -> None:
        self._job = job
        self._evaluator = evaluator
        self._name = name
        self._reference = reference
        self._reference_vector: np.ndarray | None = None
        self._target = job.target

    async def values(self, texts: Sequence[str]) -> tuple[np.ndarray, int]:
        """The explained value of each text and the target; the first call resolves
        the target from texts[0] when the request left it unset."""
        batch = list(texts)
        if self._reference is not None and self._reference_vector is None:
            batch.append(self._reference)
        rows = await self._outputs(batch)
        if self._reference is not None:
            if self._reference_vector is None:
                self._reference_vector, rows = rows[-1], rows[:-1]
            return _cosine(rows, self._reference_vector), 0
        self._target = resolve_target(self._job.output, rows[0], self._target)
        return rows[:, self._target].astype(np.float64), self._target

    async def _outputs(self, texts: list[str]) -> np.ndarray:
        """The explained output's rows for the texts, flattened to [len(texts), k];
        the job's other inputs are held at their values."""
        count = len(texts)
        inputs: dict[str, np.ndarray] = {}
        for key, value in self._job.inputs.items():
            if key == self._name:
                column = np.empty(count, dtype=object)
                column[:] = texts
                inputs[key] = column.reshape((count, *value.shape[1:]))
            else:
                inputs[key] = np.repeat(value, count, axis=0)
        outputs = await self._evaluator.run(inputs)
        rows = np.asarray(outputs[self._job.output], dtype=np.float64)
        return rows.reshape(count, -1)


def _cosine(rows: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Each row's cosine similarity to `reference` (0 for a zero vector)."""
    norms = np.linalg.norm(rows, axis=1) * float(np.linalg.norm(reference))
    dots = rows @ reference
    return np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)


async def _kernel_shap(
    job: ExplainJob, score: _Scorer, evaluator: Evaluator, tokens: Tokens
) -> np.ndarray:
    """KernelSHAP over token presence (the kernel_shap method's shap run: a worker
    thread, seeded under its lock, no l1 regularisation), whose model function sends
    each batch of masks back to the event loop to evaluate (giving up once the
    explanation is cancelled)."""
    n = len(tokens.strings)
    if n == 0:
        return np.zeros(0, np.float64)
    shap = load_shap()
    # shap evaluates the background and the input once each before its samples.
    samples = min(2 * n + 2048, evaluator.remaining - 2)
    if samples < 1:
        raise InvalidArgument(
            f"max_evaluations: method 'tokens' ({KERNEL_SHAP}) needs more than "
            f"{evaluator.evaluations + 2} evaluations, got max_evaluations {job.max_evaluations}"
        )
    seed = (int_param(job.parameters, SEED_PARAM, 0, minimum=0) or 0) % 2**32
    loop = asyncio.get_running_loop()

    def model(masks: np.ndarray) -> np.ndarray:
        texts = [tokens.keeping(row > 0.5) for row in masks]
        values, _ = on_loop(score.values(texts), loop, evaluator)
        return values

    present, absent = np.ones((1, n)), np.zeros((1, n))
    phi, _ = await asyncio.to_thread(run_shap, shap, model, absent, present, samples, seed)
    return phi.reshape(n)


def _text_input(job: ExplainJob) -> tuple[str, str]:
    """The name and text of the job's one text (BYTES) input."""
    texts = [
        name for name, value in job.inputs.items() if value.dtype == object and value.size == 1
    ]
    if len(texts) != 1 or len(job.inputs[texts[0]].shape) == 0:
        raise InvalidArgument(
            "method: 'tokens' explains a text model's one text input (BYTES, one element), "
            f"got inputs {sorted(job.inputs)}; use 'kernel_shap' or 'occlusion'"
        )
    item = job.inputs[texts[0]].reshape(-1)[0]
    if isinstance(item, bytes):
        item = item.decode(errors="replace")
    return texts[0], str(item)


def _check_output(job: ExplainJob) -> None:
    """A generative model's answer is a stream of text, not one number to explain (the
    request layer has already refused outputs that are not numbers)."""
    if job.model.decoupled:
        raise InvalidArgument(
            "method: 'tokens' explains embedding models and text classifiers, "
            "not a generative model"
        )


def _mode(job: ExplainJob) -> str:
    mode = job.parameters.get(MODE_PARAM, LEAVE_ONE_OUT)
    if mode not in MODES:
        shown = echo(mode) if isinstance(mode, str) else f"{type(mode).__name__} {mode}"
        raise InvalidArgument(
            f"parameters.{MODE_PARAM}: got {shown}, expected one of {list(MODES)}"
        )
    return str(mode)


def _reference(job: ExplainJob) -> str:
    reference = job.parameters.get(REFERENCE_PARAM)
    if not isinstance(reference, str):
        got = "none" if reference is None else type(reference).__name__
        raise InvalidArgument(
            f"parameters.{REFERENCE_PARAM}: an embedding model's tokens are explained by "
            f"their similarity to a reference text, expected a string, got {got}"
        )
    return reference


def _load_tokenizer(version: Path) -> Tokenizer:
    """The tokenizer in the version directory (beside model.onnx); blocking (file
    I/O), so off the event loop."""
    path = version / TOKENIZER_FILE
    if not path.is_file():
        raise FailedPrecondition(f"method 'tokens' needs the model version's {TOKENIZER_FILE}")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # noqa: BLE001 - tokenizers raises a bare Exception
        raise FailedPrecondition(
            f"method 'tokens': the model version's {TOKENIZER_FILE} could not be read"
        ) from exc
