"""The API-key label of token counters: one series per key id, up to the bound."""

from __future__ import annotations

import threading

from services.inference.tasks.key_labels import ANONYMOUS, OTHER, KeyLabels


def test_key_ids_keep_their_label_up_to_the_bound() -> None:
    labels = KeyLabels(limit=3)
    assert [labels(k) for k in ("a", "b", "c")] == ["a", "b", "c"]
    # Past the bound, new ids share one label; known ids keep theirs.
    assert labels("d") == OTHER
    assert labels("b") == "b"


def test_no_key_is_anonymous_outside_the_bound() -> None:
    labels = KeyLabels(limit=1)
    assert labels("") == ANONYMOUS
    assert labels("a") == "a"
    assert labels("b") == OTHER
    assert labels("") == ANONYMOUS


def test_the_bound_holds_across_threads() -> None:
    labels = KeyLabels(limit=10)
    seen: list[str] = []
    lock = threading.Lock()

    def label(start: int) -> None:
        got = [labels(f"k{i}") for i in range(start, start + 50)]
        with lock:
            seen.extend(got)

    threads = [threading.Thread(target=label, args=(n * 50,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen) - {OTHER}) == 10
    assert seen.count(OTHER) == 190
