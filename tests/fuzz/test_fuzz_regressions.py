"""Every crash the fuzz targets found, kept as a plain test of its minimal input.

Each test is marked `fuzz_regression(<target>)`, so the fuzz report counts the
crashes found per target; none is open.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from maas_proto.inference import grpc_predict_v2_pb2 as pb

from services.common import tensors
from services.common.errors import InvalidArgument, ServiceError
from services.gateway.routes import ModelRoute, VersionRoute
from services.inference.config import parse_config
from services.inference.manager import ModelManager, State, VersionEntry
from services.registry import names
from services.registry.domain import MAIN_FILE
from services.registry.uploads import check_config
from services.registry.validation import validate_model
from tests.unit.registry.registry_onnx import add_model, external_reference

Tensor = pb.ModelInferRequest.InferInputTensor


@pytest.mark.fuzz_regression("tensors.decode")
@pytest.mark.parametrize("datatype", ["BYTES", "UINT16", "BOOL"])
def test_shape_beyond_any_array_is_invalid_argument(datatype: str) -> None:
    # numpy's reshape raised ValueError "array is too big" (INTERNAL on the wire).
    tensor = Tensor(name="x", datatype=datatype, shape=[0, 2**62])
    with pytest.raises(InvalidArgument, match=r"tensor 'x': shape \[0, 4611686018427387904\]"):
        tensors.decode(tensor, b"")


@pytest.mark.fuzz_regression("tensors.decode")
def test_rank_over_numpy_limit_is_invalid_argument() -> None:
    # A rank-70 shape made numpy raise ValueError (issue 11, item 14).
    tensor = Tensor(name="x", datatype="FP32", shape=[1] * 70)
    with pytest.raises(InvalidArgument, match="70 dimensions, expected at most 32"):
        tensors.decode(tensor, b"\x00" * 4)


@pytest.mark.fuzz_regression("tensors.decode")
def test_huge_bytes_shape_is_refused_before_allocating() -> None:
    # np.empty(2**31, object) ran before any size check: MemoryError, or 16 GiB.
    tensor = Tensor(name="x", datatype="BYTES", shape=[2**31])
    with pytest.raises(InvalidArgument, match="too few for 2147483648 BYTES elements"):
        tensors.decode(tensor, b"")


@pytest.mark.fuzz_regression("BYTES codec")
def test_bytes_count_beyond_the_raw_contents_is_invalid_argument() -> None:
    # 0 bytes claiming 402,612,218 elements allocated 3 GiB first.
    with pytest.raises(InvalidArgument, match="expected at least 1610448872"):
        tensors.decode_bytes_elements("x", b"", 402_612_218)


@pytest.mark.fuzz_regression("version selectors")
@pytest.mark.parametrize("text", ["🄀", "²", "১", "01", "1" * 5000])
def test_version_selector_takes_only_canonical_ascii_numbers(text: str) -> None:
    # str.isdigit() let these through to int(): ValueError for '🄀', '²' and 5000
    # digits (INTERNAL), and '১' (Bengali one) or '01' silently named version 1.
    with pytest.raises(InvalidArgument, match="expected a version number in ASCII digits"):
        names.selector(text)


@pytest.mark.fuzz_regression("version selectors")
def test_gateway_route_resolve_refuses_non_ascii_digits() -> None:
    route = ModelRoute("m", versions={1: VersionRoute()})
    with pytest.raises(ServiceError):
        route.resolve("፩")


@pytest.mark.fuzz_regression("version selectors")
def test_inference_resolve_refuses_non_ascii_digits() -> None:
    manager = ModelManager()
    manager._models["m"] = {1: VersionEntry(1, State.UNAVAILABLE)}
    with pytest.raises(ServiceError):
        manager.resolve("m", "²")


@pytest.mark.fuzz_regression("ONNX validation")
def test_element_type_outside_the_enum_is_invalid_argument(tmp_path: Path) -> None:
    # With an op in an unknown domain the checker skips inference and lets elem_type
    # -1 through; TensorProto.DataType.Name(-1) then raised ValueError.
    model = add_model(7)
    model.graph.node[0].domain = "com.evil"
    model.opset_import.add(domain="com.evil", version=1)
    model.graph.input[0].type.tensor_type.elem_type = -1
    (tmp_path / MAIN_FILE).write_bytes(model.SerializeToString())
    with pytest.raises(InvalidArgument, match="tensor 'X': element type -1 has no KServe v2"):
        validate_model(tmp_path, {MAIN_FILE: 1}, opset_min=7, opset_max=23)


@pytest.mark.fuzz_regression("ONNX validation")
def test_external_data_location_that_is_not_utf8_is_invalid_argument(tmp_path: Path) -> None:
    # ONNX strings are proto2 (unchecked): protobuf returned the location as bytes,
    # and str.replace on it raised TypeError.
    data = external_reference("LOCX").replace(b"LOCX", b"\xf4\x90\x80\x80")
    (tmp_path / MAIN_FILE).write_bytes(data)
    with pytest.raises(InvalidArgument, match="tensor 'B': external data entries must be UTF-8"):
        validate_model(tmp_path, {MAIN_FILE: len(data)}, opset_min=7, opset_max=23)


@pytest.mark.fuzz_regression("ONNX validation")
def test_checker_messages_do_not_name_the_staging_directory(tmp_path: Path) -> None:
    # The checker's "should be stored in <path>" named the server's staging directory.
    data = external_reference("w.bin")
    (tmp_path / MAIN_FILE).write_bytes(data)
    with pytest.raises(InvalidArgument, match="failed the ONNX checker") as caught:
        validate_model(tmp_path, {MAIN_FILE: len(data), "w.bin": 16}, opset_min=7, opset_max=23)
    assert str(tmp_path) not in caught.value.message
    assert "<upload>/w.bin" in caught.value.message


@pytest.mark.fuzz_regression("serving config YAML")
@pytest.mark.parametrize("text", ["providers: null\n", "providers: 5\n", "providers: [[cpu]]\n"])
def test_providers_that_are_not_a_list_of_names_are_invalid_argument(text: str) -> None:
    with pytest.raises(InvalidArgument, match="providers"):
        parse_config(text, source="config.yaml")


_YAML_TEXTS = ["!!int x{}\n", "{!!float ''}\n", "when: 2001-13-45\n", "!!timestamp x{}\n"]


@pytest.mark.fuzz_regression("serving config YAML")
@pytest.mark.parametrize("text", _YAML_TEXTS)
def test_yaml_constructor_errors_are_invalid_argument_in_serving_config(text: str) -> None:
    with pytest.raises(InvalidArgument, match="not valid YAML"):
        parse_config(text, source="config.yaml")


_DEEP = "{" * 600 + "}" * 600 + "\n"


@pytest.mark.fuzz_regression("serving config YAML")
def test_deeply_nested_yaml_is_invalid_argument_in_serving_config() -> None:
    with pytest.raises(InvalidArgument, match="config.yaml"):
        parse_config(_DEEP, source="config.yaml")


@pytest.mark.fuzz_regression("serving config YAML")
def test_deeply_nested_yaml_is_invalid_argument_at_upload() -> None:
    with pytest.raises(InvalidArgument, match="config"):
        check_config(_DEEP)


@pytest.mark.fuzz_regression("serving config YAML")
@pytest.mark.parametrize("text", _YAML_TEXTS)
def test_yaml_constructor_errors_are_invalid_argument_at_upload(text: str) -> None:
    with pytest.raises(InvalidArgument, match="not valid YAML"):
        check_config(text)
