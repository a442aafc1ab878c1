"""Model config parsing and the ONNX Runtime options it produces."""

from __future__ import annotations

import re

import pytest

from services.common.datatypes import by_name
from services.common.errors import InvalidArgument
from services.inference.config import ModelConfig, parse_config
from services.inference.model import DEFAULT_WARMUP, warmup_samples
from services.inference.runtime import (
    LoadError,
    Signature,
    TensorSpec,
    provider_chain,
    session_options,
)

CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"


def test_defaults() -> None:
    config = parse_config("", source="config.yaml")
    assert config.dynamic_batching.enabled and config.dynamic_batching.max_queue_delay_us == 0
    assert config.instances == 1 and config.providers == ("auto",)


def test_bad_keys_name_the_problem() -> None:
    with pytest.raises(InvalidArgument, match="instances"):
        parse_config("instances: 0", source="m/config.yaml")
    with pytest.raises(InvalidArgument, match="dynamic_batching.max_batchsize"):
        parse_config("dynamic_batching: {max_batchsize: 4}", source="m/config.yaml")
    with pytest.raises(InvalidArgument, match="unknown provider 'rocm'"):
        parse_config("providers: [rocm]", source="m/config.yaml")
    with pytest.raises(InvalidArgument, match="expected a YAML mapping"):
        parse_config("- 1", source="m/config.yaml")


def test_auto_uses_cuda_where_available_with_safe_options() -> None:
    config = parse_config("cuda: {gpu_mem_limit: 2147483648, device_id: 1}", source="c")
    chain = provider_chain(config, [CUDA, CPU])
    assert [name for name, _ in chain] == [CUDA, CPU]
    options = chain[0][1]
    assert options == {
        "device_id": "1",
        "cudnn_conv_algo_search": "HEURISTIC",
        "arena_extend_strategy": "kSameAsRequested",
        "gpu_mem_limit": "2147483648",
    }
    assert [name for name, _ in provider_chain(config, [CPU])] == [CPU]


def test_required_cuda_without_cuda_fails_clearly() -> None:
    config = ModelConfig(providers=("cuda",), require_cuda=True)
    with pytest.raises(LoadError, match="CUDAExecutionProvider was required"):
        provider_chain(config, [CPU])


def test_tensorrt_options() -> None:
    config = parse_config(
        "providers: [tensorrt, cuda]\ntensorrt: {fp16: true, engine_cache_dir: /cache}", source="c"
    )
    chain = dict(provider_chain(config, ["TensorrtExecutionProvider", CUDA, CPU]))
    assert chain["TensorrtExecutionProvider"]["trt_fp16_enable"] == "True"
    assert chain["TensorrtExecutionProvider"]["trt_engine_cache_path"] == "/cache"


def test_threads_do_not_oversubscribe() -> None:
    options = session_options(ModelConfig(instances=4), cores=8)
    assert options.intra_op_num_threads == 2 and options.inter_op_num_threads == 1
    assert session_options(ModelConfig(instances=4), cores=2).intra_op_num_threads == 1


def test_warmup_samples_parse_and_bad_ones_name_the_key() -> None:
    assert parse_config("", source="c").warmup is None
    assert parse_config("warmup: []", source="c").warmup == ()
    config = parse_config(
        "warmup: [{name: rows, inputs: {x: {shape: [2, 3], value: 1.5}}}]", source="c"
    )
    assert config.warmup is not None
    sample = config.warmup[0]
    assert sample.name == "rows" and sample.inputs["x"].shape == (2, 3)
    assert sample.inputs["x"].value == 1.5
    with pytest.raises(InvalidArgument, match=r"warmup\.0\.inputs\.x\.shape"):
        parse_config("warmup: [{inputs: {x: {shape: [-1]}}}]", source="c")
    with pytest.raises(InvalidArgument, match=r"warmup\.0\.inputs\.x\.dims"):
        parse_config("warmup: [{inputs: {x: {shape: [1], dims: [1]}}}]", source="c")
    with pytest.raises(InvalidArgument, match="at most"):
        parse_config("warmup: [{inputs: {x: {shape: [100000, 100000]}}}]", source="c")


def test_warmup_inputs_are_built_and_checked_against_the_signature() -> None:
    signature = Signature(
        (
            TensorSpec("x", by_name("FP32", tensor="x"), (-1, 3)),
            TensorSpec("s", by_name("BYTES", tensor="s"), (-1,)),
        ),
        (TensorSpec("y", by_name("FP32", tensor="y"), (-1, 3)),),
    )
    default = warmup_samples(ModelConfig(), signature)
    assert [label for label, _ in default] == [DEFAULT_WARMUP]
    assert default[0][1]["x"].shape == (1, 3) and default[0][1]["s"].tolist() == [""]
    config = parse_config(
        "warmup: [{inputs: {x: {shape: [2, 3], value: 2}, s: {shape: [2], value: hi}}}]",
        source="c",
    )
    [(label, inputs)] = warmup_samples(config, signature)
    assert label == "warm-up sample '1'"
    assert inputs["x"].tolist() == [[2.0] * 3] * 2 and inputs["s"].tolist() == ["hi", "hi"]
    assert warmup_samples(parse_config("warmup: []", source="c"), signature) == []
    cases = {
        "warmup: [{inputs: {x: {shape: [1, 3]}}}]": "missing input 's'",
        "warmup: [{inputs: {x: {shape: [1, 4]}, s: {shape: [1]}}}]": "shape [1, 4], expected",
        "warmup: [{inputs: {z: {shape: [1]}}}]": "unknown input 'z', expected inputs ['s', 'x']",
        "warmup: [{inputs: {x: {shape: [1, 3], value: abc}, s: {shape: [1]}}}]": "not a FP32",
    }
    for text, message in cases.items():
        with pytest.raises(LoadError, match=re.escape(message)):
            warmup_samples(parse_config(text, source="c"), signature)
