"""The protobuf converters take typed snapshots, never live model objects (issue A, 12)."""

from __future__ import annotations

from maas_proto.inference import model_config_pb2 as mc

from services.common.datatypes import by_name
from services.inference import convert
from services.inference.app import InferenceApp, ModelDetails
from services.inference.config import DynamicBatching
from services.inference.manager import ModelManager, State
from services.inference.runtime import CPU, TensorSpec
from services.inference.stats import ModelStats


def test_config_response_from_details() -> None:
    fp32 = by_name("FP32", tensor="x")
    details = ModelDetails(
        name="m",
        platform="onnxruntime_onnx",
        max_batch_size=8,
        filename="model.onnx",
        inputs=(TensorSpec("x", fp32, (-1, 3)),),
        outputs=(TensorSpec("y", fp32, (-1, 2)),),
        provider=CPU,
        instances=2,
        batching=DynamicBatching(max_queue_delay_us=100, preferred_batch_sizes=(4,)),
    )
    config = convert.config_response(details).config
    assert (config.name, config.max_batch_size, config.default_model_filename) == (
        "m",
        8,
        "model.onnx",
    )
    assert list(config.input[0].dims) == [3] and list(config.output[0].dims) == [2]
    assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    assert config.instance_group[0].count == 2
    assert config.dynamic_batching.max_queue_delay_microseconds == 100
    assert list(config.dynamic_batching.preferred_batch_size) == [4]


def test_statistics_snapshot_does_not_move_with_later_requests() -> None:
    stats = ModelStats()
    stats.record_execution(4, 2, 10, 20, 30)
    stats.record_request(True, 100, 5)
    snapshot = stats.snapshot("m", "1")
    stats.record_execution(8, 1, 1, 1, 1)
    stats.record_request(False, 7, None)
    entry = convert.statistics_response([snapshot]).model_stats[0]
    assert (entry.name, entry.version, entry.execution_count, entry.inference_count) == (
        "m",
        "1",
        1,
        4,
    )
    assert entry.inference_stats.success.count == 1 and entry.inference_stats.fail.count == 0
    assert entry.inference_stats.compute_infer.ns == 40  # charged to each of 2 requests
    assert [b.batch_size for b in entry.batch_stats] == [4]


def test_model_state_goes_through_public_calls() -> None:
    manager = ModelManager()
    manager.fail_version("m", 1, "broken")
    app = InferenceApp(manager)
    assert not app.model_ready("m", "") and not app.model_ready("m", "1")
    assert manager.model_names() == ["m"]
    [status] = manager.versions("m").values()
    assert (status.state, status.reason, status.ready) == (State.UNAVAILABLE, "broken", False)
    manager.set_aliases("m", {"production": 1})
    assert manager.aliases("m") == {"production": 1}
    manager.forget("m", 1)
    assert manager.versions("m") == {} and manager.model_names() == []
