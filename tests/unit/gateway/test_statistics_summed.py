"""Summing ModelStatistics replies (services.gateway.statistics.summed), without servers."""

from __future__ import annotations

from maas_proto.inference import grpc_predict_v2_pb2 as pb

from services.gateway.statistics import summed


def stats(
    name: str, version: str, count: int, last: int, batches: dict[int, int]
) -> pb.ModelStatistics:
    """A model's statistics with `count` successes of 10 ns each and batches by size."""
    model = pb.ModelStatistics(
        name=name,
        version=version,
        inference_count=count,
        execution_count=count,
        last_inference=last,
    )
    model.inference_stats.success.count = count
    model.inference_stats.success.ns = 10 * count
    for size, runs in batches.items():
        batch = model.batch_stats.add(batch_size=size)
        batch.compute_infer.count = runs
        batch.compute_infer.ns = 100 * runs
    model.memory_usage.add(type="CPU", id=0, byte_size=1000)
    return model


def test_counts_add_up_per_name_and_version() -> None:
    a = pb.ModelStatisticsResponse(
        model_stats=[stats("m", "1", 3, 50, {1: 3}), stats("m", "2", 1, 70, {1: 1})]
    )
    b = pb.ModelStatisticsResponse(
        model_stats=[stats("m", "1", 4, 90, {1: 2, 2: 1}), stats("k", "1", 2, 10, {2: 1})]
    )
    total = {(s.name, s.version): s for s in summed([a, b]).model_stats}
    assert list(total) == [("k", "1"), ("m", "1"), ("m", "2")]  # sorted
    m1 = total[("m", "1")]
    assert (m1.inference_count, m1.execution_count, m1.last_inference) == (7, 7, 90)
    assert (m1.inference_stats.success.count, m1.inference_stats.success.ns) == (7, 70)
    assert not m1.inference_stats.HasField("fail")  # absent in every part, absent in the sum
    batches = {b.batch_size: (b.compute_infer.count, b.compute_infer.ns) for b in m1.batch_stats}
    assert batches == {1: (5, 500), 2: (1, 100)}
    assert [(u.type, u.id, u.byte_size) for u in m1.memory_usage] == [("CPU", 0, 2000)]
    assert total[("m", "2")] == stats("m", "2", 1, 70, {1: 1})  # one part: itself


def test_no_replies_sum_to_nothing() -> None:
    assert summed([]) == pb.ModelStatisticsResponse()


def test_the_sum_does_not_depend_on_the_order_replies_came_in() -> None:
    # Backends answer concurrently: the batch sizes each one saw come in either order.
    a = pb.ModelStatisticsResponse(model_stats=[stats("m", "1", 3, 50, {4: 1, 1: 2})])
    b = pb.ModelStatisticsResponse(model_stats=[stats("m", "1", 2, 60, {2: 1, 3: 1})])
    b.model_stats[0].memory_usage.add(type="GPU", id=1, byte_size=5)
    forward, backward = summed([a, b]), summed([b, a])
    assert forward == backward
    model = forward.model_stats[0]
    assert [s.batch_size for s in model.batch_stats] == [1, 2, 3, 4]
    assert [s.compute_infer.count for s in model.batch_stats] == [2, 1, 1, 1]
    assert [(u.type, u.id, u.byte_size) for u in model.memory_usage] == [
        ("CPU", 0, 2000),
        ("GPU", 1, 5),
    ]
