"""Files ONNX Runtime cannot load are load failures with ORT's reason, whatever class
ORT raises for them (its classes differ between versions: InvalidProtobuf for bytes
that are not a model was missing from the list, so such a file was reported as an
unexpected error)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.inference.config import ModelConfig
from services.inference.runtime import LoadError, create_session


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"this is not an onnx model", "INVALID_PROTOBUF"), (b"", "")],
    ids=["garbage", "empty"],
)
def test_a_file_ort_cannot_parse_is_a_load_error(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    with pytest.raises(LoadError, match="ONNX Runtime could not load model.onnx") as caught:
        create_session(path, ModelConfig(providers=("cpu",)))
    assert reason in str(caught.value)


def test_a_missing_file_is_a_load_error(tmp_path: Path) -> None:
    with pytest.raises(LoadError, match="could not load"):
        create_session(tmp_path / "absent.onnx", ModelConfig(providers=("cpu",)))
