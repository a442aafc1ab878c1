"""Rollouts without errors: a version takes traffic only once a backend has it READY."""

from __future__ import annotations

import asyncio
import random

from maas_proto.inference import grpc_predict_v2_pb2 as pb
from prometheus_client import CollectorRegistry

from services.common.errors import Unavailable
from services.gateway import wire
from services.gateway.app import GatewayApp
from services.gateway.canary import CanaryPolicy
from services.gateway.metrics import GatewayMetrics
from services.gateway.rollout import Rollouts
from services.gateway.routes import RouteTable
from services.gateway.routing import Call, Router
from services.registry.domain import Model, ModelSnapshot, Signature, Snapshot, Version
from tests.unit.gateway.test_gateway_router import Backends, infer_reply


def app(aliases: dict[str, int]) -> GatewayApp:
    routes = RouteTable()
    versions = [Version("digits", n, (), Signature()) for n in (1, 2)]
    routes.load(Snapshot(5, [ModelSnapshot(Model("digits", aliases=aliases), versions)]))
    return GatewayApp(routes, CanaryPolicy({}, random.Random(0)), None, lambda: True)


def settled(rollouts: Rollouts, gateway: GatewayApp, selector: str, ready: set[int] | None) -> str:
    assert gateway.routes is not None
    route = gateway.target("digits", selector)
    model = gateway.routes.models["digits"]
    return rollouts.settle(route, model, None if ready is None else frozenset(ready))[0].version


def test_an_alias_stays_on_its_last_ready_version_until_the_new_one_is_ready() -> None:
    gateway, rollouts = app({"production": 1}), Rollouts()
    assert settled(rollouts, gateway, "", {1, 2}) == "1"
    assert gateway.routes is not None
    gateway.routes.models["digits"].aliases["production"] = 2  # the registry moved it
    assert settled(rollouts, gateway, "", {1}) == "1"
    assert settled(rollouts, gateway, "production", {1}) == "1"
    assert settled(rollouts, gateway, "", {1, 2}) == "2"
    # Rolled back to 1 before 1 is loaded again: 2 serves meanwhile.
    gateway.routes.models["digits"].aliases["production"] = 1
    assert settled(rollouts, gateway, "", {2}) == "2"


def test_the_latest_is_the_newest_version_that_is_ready() -> None:
    gateway, rollouts = app({}), Rollouts()
    assert settled(rollouts, gateway, "", {1}) == "1"
    assert settled(rollouts, gateway, "latest", {1}) == "1"
    assert settled(rollouts, gateway, "", {1, 2}) == "2"
    # A number is what was asked for, ready or not; with nothing known, nothing changes.
    assert settled(rollouts, gateway, "2", {1}) == "2"
    assert settled(rollouts, gateway, "", None) == "2"
    assert settled(rollouts, app({"production": 1}), "", None) == "production"


def test_an_alias_goes_as_the_alias_when_the_backends_are_ahead_of_the_table() -> None:
    # The route table (its registry Watch away) still has production at 1 and knows
    # no version 3, while the backends followed the registry to 3 and unloaded 1: the
    # number 1 would fail on every backend, so the alias goes for each to resolve.
    gateway, rollouts = app({"production": 1}), Rollouts()
    assert settled(rollouts, gateway, "", {3}) == "production"
    assert settled(rollouts, gateway, "production", {3}) == "production"
    # With nothing ready anywhere, or a known version ready, nothing changes.
    assert settled(rollouts, gateway, "", set()) == "1"
    assert settled(rollouts, gateway, "", {2, 3}) == "2"


async def test_a_version_unloaded_under_a_request_is_learnt_from_the_answer() -> None:
    backends = Backends(ready={"digits": frozenset({1})})

    def answer(method: str, head: wire.Head) -> bytes:
        if head.version == "1" and backends.refreshed == 0:
            # The backend loaded 2 and unloaded 1 since its catalog was read.
            backends.ready = {"digits": frozenset({2})}
            raise Unavailable("model 'digits' version 1 is UNLOADING")
        return infer_reply(method, head)

    backends.answer = answer
    metrics = GatewayMetrics(CollectorRegistry())
    routing = Router(app({}), backends, metrics)
    request = pb.ModelInferRequest(model_name="digits").SerializeToString()
    deadline = asyncio.get_running_loop().time() + 5
    answered = await routing.infer(Call(None, wire.read_head(request), request, deadline))
    assert answered.version == "2" and backends.refreshed == 1
    assert [v for _, _, v in backends.sent] == ["1", "2"]
