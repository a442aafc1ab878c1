"""Server paths out of client-visible reasons (issue B, item 12)."""

from __future__ import annotations

from pathlib import Path

from services.common.redact import full_detail, showing_full_detail, without_paths


def test_a_known_directory_leaves_the_name_relative_to_it() -> None:
    base = Path("/srv/maas data/cache/digits/1")
    text = f"Load model from {base}/model.onnx failed: Fatal error"
    assert without_paths(text, [base]) == "Load model from model.onnx failed: Fatal error"


def test_any_other_absolute_path_becomes_its_last_component() -> None:
    text = "[Errno 2] No such file or directory: '/var/cache/maas/digits/1/model.onnx'"
    assert without_paths(text) == "[Errno 2] No such file or directory: 'model.onnx'"
    assert without_paths("no version directories in /tmp/repo/digits") == (
        "no version directories in digits"
    )


def test_what_is_not_a_path_stays() -> None:
    for text in (
        "com.evil:Evil(-1) is not a registered function/op",
        "see http://host/a/b, 1/2 and ./relative/file",
        "shape [1, 4] expected, got [2, 4]",
    ):
        assert without_paths(text) == text


def test_full_detail_holds_only_inside_its_block() -> None:
    assert not full_detail()
    with showing_full_detail():
        assert full_detail()
    assert not full_detail()
