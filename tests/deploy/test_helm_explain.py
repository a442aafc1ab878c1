"""Explanations in the chart (issue I): the gateway's per-key evaluation budget and
inference's cap on one explanation reach the containers as the settings' env, and the
schema refuses values the services would refuse."""

from __future__ import annotations

import pytest
from helm_chart import Chart, Manifest, env_of, one


def container(docs: list[Manifest], name: str, component: str) -> Manifest:
    spec = one(docs, "Deployment", name)["spec"]["template"]["spec"]
    (found,) = [c for c in spec["containers"] if c["name"] == component]
    result: Manifest = found
    return result


def test_defaults_are_the_services_own(chart: Chart) -> None:
    docs = chart.render()
    gateway = env_of(container(docs, "maas-gateway", "gateway"))
    assert gateway["MAAS_GATEWAY_EXPLAIN_EVALUATIONS_PER_SECOND"] == "1000"
    assert gateway["MAAS_GATEWAY_EXPLAIN_EVALUATIONS_BURST"] == "8192"
    inference = env_of(container(docs, "maas-inference", "inference"))
    assert inference["MAAS_INFERENCE_EXPLAIN_MAX_EVALUATIONS"] == "8192"


def test_values_reach_the_env(chart: Chart) -> None:
    docs = chart.render(
        sets=[
            "gateway.explain.evaluationsPerSecond=3",
            "gateway.explain.evaluationsBurst=100",
            "inference.explain.maxEvaluations=50",
        ]
    )
    gateway = env_of(container(docs, "maas-gateway", "gateway"))
    assert gateway["MAAS_GATEWAY_EXPLAIN_EVALUATIONS_PER_SECOND"] == "3"
    assert gateway["MAAS_GATEWAY_EXPLAIN_EVALUATIONS_BURST"] == "100"
    inference = env_of(container(docs, "maas-inference", "inference"))
    assert inference["MAAS_INFERENCE_EXPLAIN_MAX_EVALUATIONS"] == "50"


@pytest.mark.parametrize(
    "setting",
    [
        "gateway.explain.evaluationsPerSecond=0",
        "gateway.explain.evaluationsBurst=0",
        "inference.explain.maxEvaluations=0",
        "inference.explain.maxEvaluation=5",
    ],
)
def test_the_schema_refuses_what_the_services_would(chart: Chart, setting: str) -> None:
    assert "explain" in chart.fail(sets=[setting])
