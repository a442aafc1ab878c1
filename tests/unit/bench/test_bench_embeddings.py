"""The embedding bench's inputs and ratios."""

from __future__ import annotations

from tools.bench.embeddings import batches, ratios, sentences


def test_sentences_are_varied_and_the_same_every_run() -> None:
    texts = sentences()
    assert texts == sentences() and len(set(texts)) == len(texts) == 512
    assert all(8 <= len(t.split()) <= 24 for t in texts)
    groups = batches(texts, 32)
    assert len(groups) == 16 and all(len(g) == 32 for g in groups)


def test_the_goal_is_taken_against_the_faster_sentence_transformers_setting() -> None:
    # The best served level by its mean over rounds (160 at 2 clients), against means.
    rows = [
        {"label": "sentence-transformers in-process, 2 threads", "sentences_per_second": 50.0},
        {"label": "sentence-transformers in-process, 1 thread", "sentences_per_second": 90.0},
        {"label": "sentence-transformers in-process, 1 thread", "sentences_per_second": 110.0},
        {"label": "gateway (gRPC ModelInfer)", "concurrency": 1, "sentences_per_second": 120.0},
        {"label": "gateway (gRPC ModelInfer)", "concurrency": 2, "sentences_per_second": 150.0},
        {"label": "gateway (gRPC ModelInfer)", "concurrency": 2, "sentences_per_second": 170.0},
    ]
    values = {r["name"]: (r["value"], r["goal"]) for r in ratios(rows)}
    assert values == {
        "served (best level) / the faster sentence-transformers (1 thread)": (1.6, ">= 0.8"),
        "served (best level) / sentence-transformers in-process, 2 threads": (3.2, "-"),
        "served (best level) / sentence-transformers in-process, 1 thread": (1.6, "-"),
    }
