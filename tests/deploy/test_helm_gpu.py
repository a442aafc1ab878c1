"""Inference on GPU nodes: the rollout never takes the last pod down, the HPA scales on
requests in flight rather than CPU, a user's node affinity is kept beside the GPU one,
and more than one GPU per pod is refused (the sessions would all use one)."""

from __future__ import annotations

from typing import Any

import pytest
from helm_chart import Chart, one

INFERENCE = "maas-inference"
GPU_TERM = {"key": "nvidia.com/gpu.present", "operator": "In", "values": ["true"]}
REQUIRED = "inference.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
PREFERRED = "inference.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution"


def deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(docs, "Deployment", INFERENCE)


def rolling(docs: list[dict[str, Any]]) -> dict[str, Any]:
    strategy = deployment(docs)["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    return strategy["rollingUpdate"]


# ---- rollout ---------------------------------------------------------------------------


def test_gpu_rollout_surges_one_pod_and_takes_none_down(chart: Chart) -> None:
    docs = chart.render("gpu")
    hpa = one(docs, "HorizontalPodAutoscaler", INFERENCE)
    assert hpa["spec"]["minReplicas"] == 1, "the case that was an outage: one replica"
    assert rolling(docs) == {"maxSurge": 1, "maxUnavailable": 0}


@pytest.mark.parametrize("values", ["default", "kind"])
def test_cpu_rollout_is_unchanged(chart: Chart, values: str) -> None:
    assert rolling(chart.render(values)) == {"maxSurge": "25%", "maxUnavailable": 0}


def test_no_spare_gpu_replaces_one_pod_at_a_time_with_two_replicas(chart: Chart) -> None:
    sets = [
        "inference.gpu.rollout.maxSurge=0",
        "inference.gpu.rollout.maxUnavailable=1",
        "inference.autoscaling.minReplicas=2",
    ]
    assert rolling(chart.render("gpu", sets)) == {"maxSurge": 0, "maxUnavailable": 1}


@pytest.mark.parametrize(
    "sets",
    [
        # HPA floor of one.
        ["inference.gpu.rollout.maxSurge=0", "inference.gpu.rollout.maxUnavailable=1"],
        # No HPA, one replica.
        [
            "inference.autoscaling.enabled=false",
            "inference.replicas=1",
            "inference.gpu.rollout.maxSurge=0%",
            "inference.gpu.rollout.maxUnavailable=1",
        ],
    ],
)
def test_no_surge_with_one_replica_is_refused(chart: Chart, sets: list[str]) -> None:
    err = chart.fail("gpu", sets)
    assert "maxSurge 0 with a single replica" in err


def test_a_rollout_that_can_replace_nothing_is_refused(chart: Chart) -> None:
    sets = ["inference.rollout.maxSurge=0", "inference.rollout.maxUnavailable=0"]
    assert "both 0" in chart.fail("default", sets)


def test_a_rollout_value_is_a_count_or_a_percentage(chart: Chart) -> None:
    err = chart.fail("gpu", ["inference.gpu.rollout.maxSurge=one"])
    assert "/inference/gpu/rollout/maxSurge" in err


# ---- autoscaling -----------------------------------------------------------------------


def test_gpu_hpa_scales_on_requests_in_flight_not_cpu(chart: Chart) -> None:
    for values, sets in (("gpu", []), ("default", ["inference.gpu.enabled=true"])):
        hpa = one(chart.render(values, sets), "HorizontalPodAutoscaler", INFERENCE)
        assert hpa["spec"]["metrics"] == [
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": "maas_inference_inflight_requests"},
                    "target": {"type": "AverageValue", "averageValue": "16"},
                },
            }
        ], values


def test_cpu_hpa_keeps_cpu(chart: Chart) -> None:
    hpa = one(chart.render(), "HorizontalPodAutoscaler", INFERENCE)
    assert [m["type"] for m in hpa["spec"]["metrics"]] == ["Resource"]


def test_gpu_hpa_metric_can_be_tuned_and_needs_one(chart: Chart) -> None:
    sets = [
        "inference.gpu.autoscaling.podsMetric.name=maas_inference_queue_depth",
        "inference.gpu.autoscaling.podsMetric.averageValue=4",
        "inference.gpu.autoscaling.targetCPUUtilizationPercentage=80",
    ]
    hpa = one(chart.render("gpu", sets), "HorizontalPodAutoscaler", INFERENCE)
    by_type = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert by_type["Pods"]["pods"]["metric"]["name"] == "maas_inference_queue_depth"
    assert by_type["Pods"]["pods"]["target"]["averageValue"] == "4"
    assert by_type["Resource"]["resource"]["target"]["averageUtilization"] == 80
    err = chart.fail("gpu", ["inference.gpu.autoscaling.podsMetric.enabled=false"])
    assert "podsMetric" in err


# ---- node affinity ---------------------------------------------------------------------


def node_affinity(docs: list[dict[str, Any]]) -> dict[str, Any]:
    affinity: dict[str, Any] = deployment(docs)["spec"]["template"]["spec"]["affinity"]
    return affinity["nodeAffinity"]


def test_a_users_node_affinity_survives_next_to_the_gpu_one(chart: Chart) -> None:
    sets = [
        f"{REQUIRED}.nodeSelectorTerms[0].matchExpressions[0].key=topology.kubernetes.io/zone",
        f"{REQUIRED}.nodeSelectorTerms[0].matchExpressions[0].operator=In",
        f"{REQUIRED}.nodeSelectorTerms[0].matchExpressions[0].values[0]=eu-west-1a",
        f"{REQUIRED}.nodeSelectorTerms[1].matchExpressions[0].key=gpu.example.com/model",
        f"{REQUIRED}.nodeSelectorTerms[1].matchExpressions[0].operator=In",
        f"{REQUIRED}.nodeSelectorTerms[1].matchExpressions[0].values[0]=h100",
        f"{PREFERRED}[0].weight=10",
        f"{PREFERRED}[0].preference.matchExpressions[0].key=spot",
        f"{PREFERRED}[0].preference.matchExpressions[0].operator=DoesNotExist",
    ]
    node = node_affinity(chart.render("gpu", sets))
    terms = node["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    # Terms are ORed: the GPU expression is ANDed into each, so none admits a CPU node.
    assert terms == [
        {
            "matchExpressions": [
                {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["eu-west-1a"]},
                GPU_TERM,
            ]
        },
        {
            "matchExpressions": [
                {"key": "gpu.example.com/model", "operator": "In", "values": ["h100"]},
                GPU_TERM,
            ]
        },
    ]
    assert node["preferredDuringSchedulingIgnoredDuringExecution"] == [
        {
            "weight": 10,
            "preference": {"matchExpressions": [{"key": "spot", "operator": "DoesNotExist"}]},
        }
    ]


def test_a_users_preferred_node_affinity_alone_gets_the_gpu_term(chart: Chart) -> None:
    sets = [
        f"{PREFERRED}[0].weight=10",
        f"{PREFERRED}[0].preference.matchExpressions[0].key=spot",
        f"{PREFERRED}[0].preference.matchExpressions[0].operator=DoesNotExist",
    ]
    node = node_affinity(chart.render("gpu", sets))
    terms = node["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchExpressions": [GPU_TERM]}]
    assert node["preferredDuringSchedulingIgnoredDuringExecution"][0]["weight"] == 10


def test_a_users_node_affinity_is_kept_as_is_on_cpu(chart: Chart) -> None:
    sets = [
        f"{REQUIRED}.nodeSelectorTerms[0].matchExpressions[0].key=zone",
        f"{REQUIRED}.nodeSelectorTerms[0].matchExpressions[0].operator=Exists",
    ]
    node = node_affinity(chart.render("default", sets))
    terms = node["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchExpressions": [{"key": "zone", "operator": "Exists"}]}]


# ---- GPUs per pod ----------------------------------------------------------------------


def test_more_than_one_gpu_per_pod_is_refused_with_the_reason(chart: Chart) -> None:
    err = chart.fail("gpu", ["inference.gpu.count=2"])
    assert "inference.gpu.count is 2, expected 1" in err and "device_id" in err
    # Off the GPU the count means nothing and is not checked.
    assert chart.render("default", ["inference.gpu.count=2"])
