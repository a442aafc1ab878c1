"""Model config parsing and the ONNX Runtime options it produces."""

from __future__ import annotations

import pytest

from services.common.errors import InvalidArgument
from services.inference.config import ModelConfig, parse_config
from services.inference.runtime import LoadError, provider_chain, session_options

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
    with pytest.raises(InvalidArgument, match="expected a mapping"):
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
