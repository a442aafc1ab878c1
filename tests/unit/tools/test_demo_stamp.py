"""tools.demo.stamp: a demo directory is built once, swapped in whole, and never half."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tools.demo import stamp


def _writer(calls: list[str], text: str = "v1") -> Callable[[Path], None]:
    def write(out: Path) -> None:
        calls.append(text)
        (out / "1").mkdir()
        (out / "1" / "model.onnx").write_text(text)
        (out / "config.yaml").write_text("task: tensor\n")

    return write


def test_built_once_then_current(tmp_path: Path) -> None:
    model_dir, calls = tmp_path / "m", []
    assert stamp.build_once(model_dir, "a", _writer(calls)) is True
    assert stamp.build_once(model_dir, "a", _writer(calls)) is False
    assert calls == ["v1"]
    assert stamp.built_files(model_dir, "a") == [
        model_dir / "1" / "model.onnx",
        model_dir / "config.yaml",
    ]
    assert (model_dir / "1" / "model.onnx").stat().st_mode & 0o777 == 0o644


def test_another_fingerprint_or_a_missing_file_rebuilds(tmp_path: Path) -> None:
    model_dir, calls = tmp_path / "m", []
    stamp.build_once(model_dir, "a", _writer(calls))
    assert stamp.build_once(model_dir, "b", _writer(calls, "v2")) is True
    assert (model_dir / "1" / "model.onnx").read_text() == "v2"
    (model_dir / "config.yaml").unlink()
    assert stamp.built_files(model_dir, "b") is None
    assert stamp.build_once(model_dir, "b", _writer(calls, "v3")) is True
    assert calls == ["v1", "v2", "v3"]


def test_a_failed_build_leaves_the_old_one(tmp_path: Path) -> None:
    model_dir, calls = tmp_path / "m", []
    stamp.build_once(model_dir, "a", _writer(calls))

    def broken(out: Path) -> None:
        (out / "partial").write_text("x")
        raise RuntimeError("check failed")

    with pytest.raises(RuntimeError, match="check failed"):
        stamp.build_once(model_dir, "b", broken)
    assert (model_dir / "1" / "model.onnx").read_text() == "v1"
    assert stamp.built_files(model_dir, "a") is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == [".m.lock", "m"]


def test_concurrent_builders_build_once(tmp_path: Path) -> None:
    model_dir, calls = tmp_path / "m", []
    start = threading.Barrier(4)
    results: list[bool] = []

    def run() -> None:
        start.wait()
        results.append(stamp.build_once(model_dir, "a", _writer(calls)))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == ["v1"]
    assert sorted(results) == [False, False, False, True]


def test_fingerprint_follows_sources_and_packages(tmp_path: Path) -> None:
    source = tmp_path / "builder.py"
    source.write_text("x = 1\n")
    first = stamp.fingerprint([source], ["numpy"])
    assert stamp.fingerprint([source], ["numpy"]) == first
    assert stamp.fingerprint([source], ["numpy", "no-such-package-here"]) != first
    source.write_text("x = 2\n")
    assert stamp.fingerprint([source], ["numpy"]) != first
