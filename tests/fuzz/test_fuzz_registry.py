"""Fuzz what the registry reads from clients: upload metadata, names, selectors, ONNX files."""

from __future__ import annotations

import tempfile
from pathlib import Path

import onnx
import pytest
from hypothesis import strategies as st
from onnx import TensorProto

from services.common.errors import InvalidArgument, NotFound, Unavailable
from services.gateway.routes import ModelRoute, VersionRoute
from services.inference.manager import ModelManager, State, VersionEntry
from services.registry import names
from services.registry.domain import MAIN_FILE, FileInfo
from services.registry.uploads import UploadMetadata, check_metadata
from services.registry.validation import validate_model
from tests.fuzz.harness import fuzz
from tests.fuzz.strategies import mutated
from tests.fuzz.yaml_inputs import yaml_texts
from tests.unit.registry.registry_onnx import add_model, external_reference

pytestmark = pytest.mark.fuzz_target

# Text as clients send it: anything, near-valid names, digits of every script, long runs.
_TEXT = st.one_of(
    st.text(max_size=40),
    st.from_regex(names.MODEL_NAME, fullmatch=True),
    st.from_regex(r"[a-z0-9./_ -]{0,12}", fullmatch=True),
    st.text(st.characters(categories=["Nd", "No"]), max_size=6),
    st.integers(1, 30).map(lambda n: "1" * (n * 200)),
    st.sampled_from(["latest", "production", "..", "../x", "a//b", "./a", "model.onnx", "0"]),
)
_SHA = st.one_of(st.text(max_size=70), st.from_regex(r"[0-9a-fA-F]{64}", fullmatch=True))
_INT64 = st.one_of(st.integers(-4, 2**20), st.integers(-(2**63), 2**63 - 1))


@st.composite
def upload_metadata(draw: st.DrawFn) -> UploadMetadata:
    """An upload's first message with any field values."""
    files = st.builds(FileInfo, _TEXT, _SHA, _INT64)
    return UploadMetadata(
        model=draw(_TEXT),
        sha256=draw(_SHA),
        size_bytes=draw(_INT64),
        description=draw(st.one_of(st.text(max_size=20), st.just("d" * 5000))),
        labels=draw(st.dictionaries(_TEXT, st.text(max_size=30), max_size=4)),
        extra_files=tuple(draw(st.lists(files, max_size=4))),
        config=draw(st.one_of(st.just(""), yaml_texts())),
        alias=draw(st.one_of(st.just(""), _TEXT)),
    )


def check_upload_metadata(case: tuple[UploadMetadata, int]) -> None:
    """The declared files, every path normalized and the total within bounds; or InvalidArgument."""
    meta, max_bytes = case
    try:
        declared = check_metadata(meta, max_bytes=max_bytes)
    except InvalidArgument:
        return
    assert names.model_name(meta.model) == meta.model
    assert declared[MAIN_FILE].size_bytes == meta.size_bytes > 0
    assert sum(f.size_bytes for f in declared.values()) <= max_bytes
    for path, info in declared.items():
        assert names.file_path(path) == path == info.path


def check_names(case: tuple[str, str]) -> None:
    """Every name check either returns its input (a canonical form) or raises InvalidArgument."""
    text, kind = case
    for check in (names.model_name, names.alias_name, names.file_path):
        try:
            assert check(check(text)) == check(text)
        except InvalidArgument:
            pass
    try:
        names.labels({text: text})
    except InvalidArgument:
        pass
    try:
        after = names.decode_page_token(kind, text)
    except InvalidArgument:
        pass
    else:
        assert after is None or names.decode_page_token(
            kind, names.encode_page_token(kind, after)
        ) == (after)


def check_selector(text: str) -> None:
    """Registry and gateway: a number, an alias, latest or default; or a clear error."""
    try:
        selector = names.selector(text)
    except InvalidArgument:
        selector = None
    else:
        assert names.selector(str(selector)) == selector
        if selector.number:
            assert str(selector.number) == text.strip()
    route = ModelRoute("m", versions={1: VersionRoute(), 2: VersionRoute()}, aliases={"prod": 2})
    try:
        route.resolve(text)
    except (NotFound, InvalidArgument):
        pass
    try:
        _inference_manager().resolve("m", text)
    except (NotFound, Unavailable, InvalidArgument):
        pass


def _inference_manager() -> ModelManager:
    """An inference model manager that knows version 1 of `m`, not loaded."""
    manager = ModelManager()
    # No public way to register a version without loading a model file.
    manager._models["m"] = {1: VersionEntry(1, State.UNAVAILABLE)}
    return manager


# -- ONNX validation -----------------------------------------------------------------------

_ELEM_TYPES = st.one_of(st.sampled_from(list(TensorProto.DataType.values())), st.integers(-2, 99))


@st.composite
def onnx_models(draw: st.DrawFn) -> tuple[bytes, dict[str, int]]:
    """A small valid model, changed in its structure and then perhaps in its bytes."""
    model = add_model(draw(st.integers(1, 25)), width=draw(st.integers(0, 3)))
    if draw(st.booleans()):
        model = onnx.ModelProto.FromString(external_reference(draw(_TEXT)))
        entry = model.graph.initializer[0].external_data.add()
        entry.key = draw(st.sampled_from(["offset", "length", "checksum", "location", "x"]))
        entry.value = draw(st.one_of(st.text(max_size=8), st.integers(-5, 2**70).map(str)))
    model.ir_version = draw(st.one_of(st.just(model.ir_version), _INT64))
    if draw(st.booleans()):
        opset = model.opset_import.add()
        opset.domain = draw(st.sampled_from(["", "ai.onnx", "com.microsoft", "com.evil"]))
        opset.version = draw(_INT64)
    for value in (*model.graph.input, *model.graph.output):
        if draw(st.booleans()):
            value.type.tensor_type.elem_type = draw(_ELEM_TYPES)
        if draw(st.booleans()):
            dims = value.type.tensor_type.shape.dim
            dims.add().dim_value = draw(_INT64)
        if draw(st.integers(0, 5)) == 0:
            value.type.ClearField("tensor_type")
            value.type.sequence_type.elem_type.tensor_type.elem_type = 1
    if draw(st.booleans()):
        node = model.graph.node[0]
        node.op_type = draw(st.sampled_from(["Add", "Reshape", "Evil", "If", ""]))
        node.domain = draw(st.sampled_from(["", "com.evil", "ai.onnx.ml"]))
    data = model.SerializeToString()
    data = draw(st.one_of(st.just(data), mutated(st.just(data))))
    sizes = {MAIN_FILE: len(data)}
    sizes.update(draw(st.dictionaries(_TEXT, st.integers(0, 64), max_size=2)))
    return data, sizes


def check_validate(directory: Path, case: tuple[bytes, dict[str, int]]) -> None:
    """A model's facts, with a datatype for every tensor; or InvalidArgument."""
    data, sizes = case
    (directory / MAIN_FILE).write_bytes(data)
    try:
        facts = validate_model(directory, sizes, opset_min=7, opset_max=23)
    except InvalidArgument as exc:
        assert str(directory) not in exc.message
        return
    assert 7 <= facts.opset <= 23
    assert all(t.datatype for t in (*facts.signature.inputs, *facts.signature.outputs))


def test_fuzz_upload_metadata_and_names() -> None:
    def check(case: tuple[UploadMetadata, int, str, str]) -> None:
        check_upload_metadata(case[:2])
        check_names(case[2:])

    cases = st.tuples(
        upload_metadata(),
        st.one_of(st.just(1 << 30), _INT64),
        _TEXT,
        st.sampled_from(["models", "versions"]),
    )
    fuzz("registry upload metadata, names", cases, check)


def test_fuzz_version_selectors() -> None:
    fuzz("version selectors", _TEXT, check_selector, batch=500)


def test_fuzz_onnx_validation() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        fuzz("ONNX validation", onnx_models(), lambda case: check_validate(Path(scratch), case))
