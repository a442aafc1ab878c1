"""tools.examples: the example model repository, built once and then left alone."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from tools.examples import ExampleStatus, build_repository, main


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[ExampleStatus]]:
    """One repository for every test here: building it trains digits."""
    out = tmp_path_factory.mktemp("examples") / "repo"
    return out, build_repository(out)


def test_layout(built: tuple[Path, list[ExampleStatus]]) -> None:
    out, statuses = built
    assert [(s.name, s.rebuilt) for s in statuses] == [("digits", True), ("adder", True)]
    assert "held-out accuracy" in statuses[0].note
    versions = sorted(p.relative_to(out).as_posix() for p in out.glob("*/*/model.onnx"))
    assert versions == ["adder/1/model.onnx", "digits/1/model.onnx"]
    assert (out / "digits" / "digits_holdout.npz").is_file()
    assert statuses[0].files == [
        out / "digits" / "1" / "model.onnx",
        out / "digits" / "digits_holdout.npz",
    ]


def test_second_run_changes_nothing(
    built: tuple[Path, list[ExampleStatus]], capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = built
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert main(["--out", str(out), "--small"]) == 0
    printed = capsys.readouterr().out
    assert f"digits: up to date: {out / 'digits' / '1' / 'model.onnx'}" in printed
    assert f"adder: up to date: {out / 'adder' / '1' / 'model.onnx'}" in printed
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == stamps


def test_missing_file_is_rebuilt(built: tuple[Path, list[ExampleStatus]], tmp_path: Path) -> None:
    copy = tmp_path / "repo"
    shutil.copytree(built[0], copy)
    (copy / "adder" / "1" / "model.onnx").unlink()
    statuses = {s.name: s.rebuilt for s in build_repository(copy)}
    assert statuses == {"digits": False, "adder": True}
    assert (copy / "adder" / "1" / "model.onnx").is_file()


def test_adder(built: tuple[Path, list[ExampleStatus]]) -> None:
    path = built[0] / "adder" / "1" / "model.onnx"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [(i.name, i.type, i.shape) for i in session.get_inputs()] == [
        ("a", "tensor(float)", ["batch", 4]),
        ("b", "tensor(float)", ["batch", 4]),
    ]
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    b = np.ones((3, 4), np.float32)
    total, diff = session.run(["sum", "diff"], {"a": a, "b": b})
    np.testing.assert_array_equal(total, a + b)
    np.testing.assert_array_equal(diff, a - b)
