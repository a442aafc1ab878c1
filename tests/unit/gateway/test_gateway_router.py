"""The gateway's app-layer request path, without gRPC: routing, retries, counting."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from prometheus_client import CollectorRegistry

from services.common.errors import NotFound, ResourceExhausted, Unavailable
from services.gateway import wire
from services.gateway.app import GatewayApp
from services.gateway.auth import ApiKey, KeyTable
from services.gateway.canary import CanaryPolicy
from services.gateway.metrics import GatewayMetrics
from services.gateway.routes import RouteTable
from services.gateway.routing import Call, Passed, Router
from services.registry.domain import Model, ModelSnapshot, Signature, Snapshot, Version

Answer = Callable[[str, wire.Head], bytes]


def infer_reply(method: str, head: wire.Head) -> bytes:
    return pb.ModelInferResponse(
        model_name=head.name, model_version=head.version
    ).SerializeToString()


@dataclass
class Backends:
    """Answers every call with `answer` and records (method, model, version) sent.

    `ready`: what the backends have READY per model (None: they do not say)."""

    answer: Answer = infer_reply
    ready: dict[str, frozenset[int]] | None = None
    sent: list[tuple[str, str, str]] = field(default_factory=list)
    wanted: int = 0
    refreshed: int = 0
    waits: list[float | None] = field(default_factory=list)
    # what `ready` becomes when the catalogs are read again (None: unchanged)
    ready_after_refresh: dict[str, frozenset[int]] | None = None

    async def unary(
        self,
        method: str,
        request: bytes,
        deadline: float,
        metadata: Passed = (),
        model: str = "",
        version: int | None = None,
        wait: float | None = None,
    ) -> bytes:
        self.waits.append(wait)
        head = wire.read_head(request)
        if model and self.ready is not None:
            versions = self.ready.get(model, frozenset())
            if not versions or (version is not None and version not in versions):
                raise Unavailable(f"no inference backend has model '{model}' ready")
        self.sent.append((method, head.name, head.version))
        return self.answer(method, head)

    def ready_versions(self, model: str) -> frozenset[int] | None:
        return None if self.ready is None else self.ready.get(model, frozenset())

    def knows(self, model: str, version: int | None = None) -> bool | None:
        if self.ready is None:
            return None
        return model in self.ready and (version is None or version in self.ready[model])

    def want_catalogs(self) -> None:
        self.wanted += 1

    async def refresh_catalogs(self, deadline: float) -> None:
        self.refreshed += 1
        if self.ready_after_refresh is not None:
            self.ready = self.ready_after_refresh


def table(*, aliases: dict[str, int] | None = None) -> RouteTable:
    routes = RouteTable()
    model = Model("digits", aliases={"production": 1} if aliases is None else aliases)
    versions = [Version("digits", n, (), Signature()) for n in (1, 2)]
    routes.load(Snapshot(5, [ModelSnapshot(model, versions)]))
    return routes


def router(
    backends: Backends, routes: RouteTable | None, keys: KeyTable | None = None
) -> tuple[Router, GatewayMetrics, CollectorRegistry]:
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry)
    app = GatewayApp(routes, CanaryPolicy({}, random.Random(0)), keys, lambda: True)
    return Router(app, backends, metrics), metrics, registry


def call(name: str = "digits", version: str = "", key: ApiKey | None = None) -> Call:
    request = pb.ModelInferRequest(model_name=name, model_version=version).SerializeToString()
    return Call(key, wire.read_head(request), request, asyncio.get_running_loop().time() + 5)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


async def test_versions_resolve_before_forwarding_and_the_answer_is_counted() -> None:
    backends = Backends()
    routing, _, registry = router(backends, table())
    answers = [await routing.infer(call(version=v)) for v in ("", "latest", "2")]
    assert [a.version for a in answers] == ["production", "2", "2"]
    assert [v for _, _, v in backends.sent] == ["production", "2", "2"]
    labels = {"model": "digits", "version": "2", "code": "OK", "protocol": "grpc"}
    assert sample(registry, "maas_gateway_requests_total", **labels) == 2


async def test_an_alias_a_backend_lacks_is_retried_as_its_number() -> None:
    def no_aliases(method: str, head: wire.Head) -> bytes:
        if not head.version.isdigit():
            raise NotFound(f"model '{head.name}' has no version '{head.version}'")
        return infer_reply(method, head)

    backends = Backends(no_aliases)
    routing, _, _ = router(backends, table())
    assert (await routing.infer(call())).version == "1"
    assert [v for _, _, v in backends.sent] == ["production", "1"]


async def test_a_stand_in_version_that_is_gone_fails_over_without_waiting_for_it() -> None:
    # production moved to 2 while the backends' catalogs (as last read) have only 1
    # READY: the call stands in on 1. The backends have unloaded 1 meanwhile, so
    # waiting for a backend with 1 ready cannot help: the first try does not wait,
    # the catalogs are read again, and the call goes to 2 with the whole wait.
    backends = Backends(
        ready={"digits": frozenset({1})}, ready_after_refresh={"digits": frozenset({2})}
    )
    real = backends.unary

    async def unloaded(method: str, request: bytes, *args: object, **kw: object) -> bytes:
        if wire.read_head(request).version == "1":
            backends.waits.append(kw.get("wait"))  # type: ignore[arg-type]
            raise NotFound("model 'digits' has no version '1'")
        return await real(method, request, *args, **kw)  # type: ignore[arg-type]

    backends.unary = unloaded  # type: ignore[method-assign]
    r, _, _ = router(backends, table(aliases={"production": 2}))
    answer = await r.infer(call())
    assert answer.version == "2"
    assert backends.waits == [0.0, None]
    assert backends.refreshed == 1


async def test_a_call_on_the_version_its_route_names_gets_the_whole_wait() -> None:
    backends = Backends(ready={"digits": frozenset({1, 2})})
    r, _, _ = router(backends, table(aliases={"production": 2}))
    assert (await r.infer(call())).version == "2"
    assert backends.waits == [None]


async def test_unknown_models_and_versions_never_reach_a_backend() -> None:
    backends = Backends()
    routing, _, registry = router(backends, table())
    for name, version in (("nope", ""), ("digits", "9"), ("digits", "blue")):
        with pytest.raises(NotFound):
            await routing.infer(call(name, version))
    assert backends.sent == []
    # The client's names stay out of the labels: the model label is empty.
    assert sample(
        registry,
        "maas_gateway_requests_total",
        model="",
        version="",
        code="NOT_FOUND",
        protocol="grpc",
    )
    assert routing.app.routes is not None
    assert await routing.model_ready(call("nope")) is None


async def test_rate_limits_are_counted_per_key_and_forwarded_index_rows_filtered() -> None:
    key = ApiKey("team", b"d" * 32, rate_per_second=0.001, burst=1, models=frozenset({"digits"}))

    def index(method: str, head: wire.Head) -> bytes:
        rows = [pb.RepositoryIndexResponse.ModelIndex(name=n, version="1") for n in ("a", "digits")]
        return pb.RepositoryIndexResponse(models=rows).SerializeToString()

    backends = Backends(index)
    routing, _, registry = router(backends, None, KeyTable([key]))
    await routing.infer(call(key=key))
    with pytest.raises(ResourceExhausted):
        await routing.infer(call(key=key))
    assert (
        sample(registry, "maas_gateway_rate_limited_requests_total", key="team", protocol="grpc")
        == 1
    )
    request = pb.RepositoryIndexRequest().SerializeToString()
    rows = await routing.index(key, request, asyncio.get_running_loop().time() + 5)
    assert [r.name for r in rows] == ["digits"]


async def test_without_a_registry_only_names_a_backend_answered_for_become_labels() -> None:
    def only_digits(method: str, head: wire.Head) -> bytes:
        if head.name != "digits":
            raise NotFound(f"unknown model '{head.name}'")
        return infer_reply(method, head)

    routing, _, registry = router(Backends(only_digits), None)
    for name in ("digits", "x1", "x2", "digits"):
        with contextlib.suppress(NotFound):
            await routing.infer(call(name))
    assert (
        sample(
            registry,
            "maas_gateway_requests_total",
            model="digits",
            version="",
            code="OK",
            protocol="grpc",
        )
        == 2
    )
    assert (
        sample(
            registry,
            "maas_gateway_requests_total",
            model="",
            version="",
            code="NOT_FOUND",
            protocol="grpc",
        )
        == 2
    )


async def test_without_a_registry_the_backends_catalogs_say_which_models_exist() -> None:
    backends = Backends(ready={"digits": frozenset({1}), "loading": frozenset()})
    routing, _, registry = router(backends, None)
    assert (await routing.infer(call("digits", "1"))).version == "1"
    with pytest.raises(NotFound, match="unknown model 'nope'"):
        await routing.infer(call("nope"))
    with pytest.raises(Unavailable, match="'loading' ready"):
        await routing.infer(call("loading"))
    assert backends.sent == [("ModelInfer", "digits", "1")]
    assert backends.wanted == 2  # each miss asks the backends what they have again
    assert sample(
        registry,
        "maas_gateway_requests_total",
        model="",
        version="",
        code="NOT_FOUND",
        protocol="grpc",
    )
    labels = {"model": "loading", "version": "", "code": "UNAVAILABLE", "protocol": "grpc"}
    assert sample(registry, "maas_gateway_requests_total", **labels) == 1
    assert await routing.model_ready(call("loading")) is None
