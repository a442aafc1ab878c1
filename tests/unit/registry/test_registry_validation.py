"""Upload validation: ONNX checker, opset range, external data, config, names."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from services.common.errors import InvalidArgument
from services.registry import names
from services.registry.uploads import check_config
from services.registry.validation import signature, validate_model
from tests.unit.registry.registry_onnx import (
    add_model,
    external_reference,
    model_bytes,
    save_external,
)


def staged(tmp_path: Path, main: bytes, **extra: bytes) -> tuple[Path, dict[str, int]]:
    (tmp_path / "model.onnx").write_bytes(main)
    sizes = {"model.onnx": len(main)}
    for name, data in extra.items():
        (tmp_path / name).write_bytes(data)
        sizes[name] = len(data)
    return tmp_path, sizes


def validate(directory: Path, sizes: dict[str, int], lo: int = 7, hi: int = 23) -> object:
    return validate_model(directory, sizes, opset_min=lo, opset_max=hi)


def test_valid_model_signature(tmp_path: Path) -> None:
    facts = validate_model(*staged(tmp_path, model_bytes()), opset_min=7, opset_max=23)
    assert facts.opset == 17
    assert [(t.name, t.datatype, t.shape) for t in facts.signature.inputs] == [
        ("X", "FP32", (-1, 4))
    ]
    assert [(t.name, t.datatype, t.shape) for t in facts.signature.outputs] == [
        ("Y", "FP32", (-1, 4))
    ]


def test_garbage_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="model.onnx (is not an ONNX model|failed the ONNX)"):
        validate(*staged(tmp_path, b"\x00\xffnot a model at all" * 10))


def test_checker_failure(tmp_path: Path) -> None:
    model = add_model()
    model.graph.node[0].input[1] = "missing"
    with pytest.raises(InvalidArgument, match="failed the ONNX checker"):
        validate(*staged(tmp_path, model.SerializeToString()))


@pytest.mark.parametrize("opset", [6, 21])
def test_opset_out_of_range(tmp_path: Path, opset: int) -> None:
    with pytest.raises(InvalidArgument, match=f"expected 7..20, got {opset}"):
        validate(*staged(tmp_path, model_bytes(opset)), 7, 20)


@pytest.mark.parametrize("location", ["../../etc/passwd", "../x.bin", "/etc/passwd", "C:\\x.bin"])
def test_external_data_outside(tmp_path: Path, location: str) -> None:
    with pytest.raises(InvalidArgument, match="points outside the model directory"):
        validate(*staged(tmp_path, external_reference(location)))


def test_external_data_not_uploaded(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match=r"not uploaded: expected one of \[\], got 'w.bin'"):
        validate(*staged(tmp_path, external_reference("w.bin")))


def test_external_data_too_short(tmp_path: Path) -> None:
    main = external_reference("w.bin", length=16)
    with pytest.raises(InvalidArgument, match="outside the file: expected at most 8 bytes"):
        validate(*staged(tmp_path, main, **{"w.bin": b"\0" * 8}))


def test_external_data_model_is_valid(tmp_path: Path) -> None:
    path = save_external(tmp_path, name="model.onnx", location="model.onnx.data")
    sizes = {p.name: p.stat().st_size for p in tmp_path.iterdir()}
    facts = validate(path.parent, sizes)
    assert facts.signature.inputs[0].shape == (-1, 256)  # type: ignore[attr-defined]


def test_unsupported_and_unknown_types() -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["X"], ["Y"])],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.BFLOAT16, [2])],
        [helper.make_tensor_value_info("Y", TensorProto.BFLOAT16, None)],
    )
    with pytest.raises(InvalidArgument, match="element type bfloat16 has no KServe v2 datatype"):
        signature(helper.make_model(graph))
    graph.input[0].type.tensor_type.elem_type = TensorProto.INT64
    graph.output[0].type.tensor_type.elem_type = TensorProto.INT64
    sig = signature(helper.make_model(graph))
    assert sig.outputs[0].unknown_rank and sig.outputs[0].shape == ()
    assert sig.inputs[0].datatype == "INT64"


def test_config_must_be_a_mapping() -> None:
    text = "dynamic_batching:\n  enabled: true\n  max_batch_size: 8\ninstances: 2\n"
    assert check_config(text) == text
    assert check_config("") == ""
    with pytest.raises(InvalidArgument, match="expected a YAML mapping .* got list"):
        check_config("- a\n- b\n")
    with pytest.raises(InvalidArgument, match="not valid YAML"):
        check_config("a: [unclosed\n")


def test_names() -> None:
    assert names.model_name("resnet-50.v2_x") == "resnet-50.v2_x"
    for bad in ("", "Upper", "-x", "a/b", "x" * 129):
        with pytest.raises(InvalidArgument, match="invalid model name"):
            names.model_name(bad)
    assert names.alias_name("production") == "production"
    for bad in ("123", "latest", "Prod", "9x", ""):
        with pytest.raises(InvalidArgument, match="invalid alias"):
            names.alias_name(bad)
    assert names.selector("") == names.Selector()
    assert names.selector("7") == names.Selector(number=7)
    assert names.selector("latest").latest
    assert names.selector("canary").alias == "canary"
    with pytest.raises(InvalidArgument):
        names.selector("0")
    for bad in ("../x", "/abs", "a//b", "a/./b", "sp ace"):
        with pytest.raises(InvalidArgument, match="invalid file path"):
            names.file_path(bad)
    assert names.file_path("") == "model.onnx"
    token = names.encode_page_token("models", "abc")
    assert names.decode_page_token("models", token) == "abc"
    with pytest.raises(InvalidArgument, match="invalid page_token"):
        names.decode_page_token("versions", token)


def test_onnx_loads_checked_model(tmp_path: Path) -> None:
    # The helper models are loadable by onnx as written: guards the fixtures themselves.
    onnx.checker.check_model(add_model(), full_check=True)
