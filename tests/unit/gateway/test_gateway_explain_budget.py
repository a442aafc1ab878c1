"""Explanation budgets: a token bucket of evaluations per key, apart from the request rate."""

from __future__ import annotations

import pytest
import yaml
from maas_proto.explain.v1 import explain_pb2
from maas_proto.inference import grpc_predict_v2_pb2 as pb

from services.common.errors import InvalidArgument, ResourceExhausted
from services.gateway.auth import KeyTable, parse_keys
from services.gateway.evaluations import EvaluationRate
from services.gateway.explain import DEFAULT_MAX_EVALUATIONS, requested_evaluations
from services.gateway.scopes import OTHER_SCOPES, scope_of


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def table(text: str, clock: Clock, rate: EvaluationRate | None = None) -> KeyTable:
    return KeyTable(parse_keys(yaml.safe_load(text), source="keys.yaml"), clock, evaluations=rate)


async def test_keys_file_overrides_the_gateway_budget() -> None:
    keys = table(
        "keys:\n"
        "  - {id: own, key: k1, explain_evaluations_per_second: 10,\n"
        "     explain_evaluations_burst: 50}\n"
        "  - {id: default, key: k2, rate_per_second: 1, burst: 1}\n",
        Clock(),
        EvaluationRate(100.0, 400.0),
    )
    own, default = keys.keys
    assert (own.explain_evaluations_per_second, own.explain_evaluations_burst) == (10.0, 50.0)
    assert await keys.evaluations.spend(own, 50) == 50.0
    with pytest.raises(ResourceExhausted, match="budget of 10 evaluations/s"):
        await keys.evaluations.spend(own, 1)
    # The other key has the gateway's budget, whatever its request rate.
    assert await keys.evaluations.spend(default, 400) == 400.0


@pytest.mark.parametrize("field", ["explain_evaluations_per_second", "explain_evaluations_burst"])
def test_a_bad_budget_in_the_keys_file_is_named(field: str) -> None:
    with pytest.raises(ValueError, match=f"{field} must be a number > 0"):
        parse_keys(yaml.safe_load(f"keys: [{{id: a, key: k, {field}: 0}}]"), source="keys.yaml")


async def test_the_budget_refills_refunds_and_names_itself() -> None:
    clock = Clock()
    keys = table("keys: [{id: team, key: k}]", clock, EvaluationRate(100.0, 1000.0))
    (key,) = keys.keys
    assert await keys.evaluations.spend(key, 800) == 800.0
    with pytest.raises(ResourceExhausted) as refused:
        await keys.evaluations.spend(key, 800)
    message = refused.value.message
    assert "API key 'team' is over its explanation budget of 100 evaluations/s" in message
    assert "max_evaluations" in message
    assert refused.value.retry_after == pytest.approx(6.0)
    clock.now += 6.0  # 200 + 600 = 800
    assert await keys.evaluations.spend(key, 800) == 800.0
    await keys.evaluations.refund(key, 700)  # spent only 100 of them
    assert await keys.evaluations.spend(key, 700) == 700.0
    with pytest.raises(ResourceExhausted):
        await keys.evaluations.spend(key, 1)


async def test_an_explanation_larger_than_the_burst_is_admitted_when_the_budget_is_full() -> None:
    """Never refused merely for its size: it takes the whole burst instead."""
    clock = Clock()
    keys = table("keys: [{id: team, key: k, rate_per_second: 1, burst: 1}]", clock)
    (key,) = keys.keys
    assert await keys.evaluations.spend(key, 100_000) == 8192.0  # the default burst
    with pytest.raises(ResourceExhausted, match="explanation budget of 1000 evaluations/s"):
        await keys.evaluations.spend(key, 100_000)
    clock.now += 8.192
    assert await keys.evaluations.spend(key, 100_000) == 8192.0


async def test_the_budget_is_apart_from_the_request_rate() -> None:
    clock = Clock()
    keys = table("keys: [{id: team, key: k, rate_per_second: 1, burst: 1}]", clock)
    (key,) = keys.keys
    await keys.evaluations.spend(key, 8192)
    with pytest.raises(ResourceExhausted):
        await keys.evaluations.spend(key, 1)
    assert keys._buckets["team"].take(clock())  # the request rate is untouched


def request(**parameters: pb.InferParameter) -> bytes:
    message = explain_pb2.ExplainRequest(model_name="digits", method="occlusion")
    for name, value in parameters.items():
        message.parameters[name].CopyFrom(value)
    return message.SerializeToString()


def test_the_charge_is_the_requested_max_evaluations_else_the_default() -> None:
    assert requested_evaluations(request()) == DEFAULT_MAX_EVALUATIONS == 2048
    assert requested_evaluations(request(max_evaluations=pb.InferParameter(int64_param=64))) == 64
    big = pb.InferParameter(uint64_param=2**63)
    assert requested_evaluations(request(max_evaluations=big)) == 2**63
    assert requested_evaluations(request(max_evaluations=pb.InferParameter(int64_param=-5))) == 0
    # A wrong type is inference's to name; the gateway charges the default.
    wrong = pb.InferParameter(string_param="lots")
    assert requested_evaluations(request(max_evaluations=wrong)) == DEFAULT_MAX_EVALUATIONS
    with pytest.raises(InvalidArgument, match="malformed request"):
        requested_evaluations(b"\x0a\xff")


def test_the_charge_is_read_wherever_the_parameters_lie() -> None:
    """Only field 4 is parsed, so tensors cost the gateway nothing; a max_evaluations
    placed after the tensors (a hand-made order) is charged all the same, and the
    last of two entries wins as protobuf's map merge says."""
    tensors = explain_pb2.ExplainRequest(model_name="digits", method="occlusion")
    tensors.inputs.add(name="input", datatype="FP32", shape=[1, 1024])
    tensors.raw_input_contents.append(bytes(4096))
    first = explain_pb2.ExplainRequest()
    first.parameters["max_evaluations"].int64_param = 10
    last = explain_pb2.ExplainRequest()
    last.parameters["max_evaluations"].int64_param = 7000
    data = first.SerializeToString() + tensors.SerializeToString() + last.SerializeToString()
    assert (
        explain_pb2.ExplainRequest.FromString(data).parameters["max_evaluations"].int64_param
        == 7000
    )
    assert requested_evaluations(data) == 7000


def test_every_explainer_method_needs_a_scope() -> None:
    service = explain_pb2.DESCRIPTOR.services_by_name["Explainer"]
    assert {m.name for m in service.methods} == set(OTHER_SCOPES)
    assert scope_of("Explain") == "inference"
