"""Router.stream_infer without gRPC: which backend path a stream request takes, and what
the backend is told of the caller."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from maas_proto.inference import grpc_predict_v2_pb2 as pb
from prometheus_client import CollectorRegistry

from services.common.errors import NotFound
from services.gateway import wire
from services.gateway.app import GatewayApp
from services.gateway.auth import ApiKey
from services.gateway.canary import CanaryPolicy
from services.gateway.metrics import GatewayMetrics
from services.gateway.routes import RouteTable
from services.gateway.routing import Call, Passed, Router
from services.registry.domain import Model, ModelSnapshot, Signature, Snapshot, Version

FINAL = "triton_final_response"


def stream_reply(model: str, text: bytes, final: bool) -> bytes:
    response = pb.ModelInferResponse(model_name=model, model_version="1")
    response.parameters[FINAL].bool_param = final
    response.raw_output_contents.append(text)
    return pb.ModelStreamInferResponse(infer_response=response).SerializeToString()


@dataclass
class Backends:
    """`chat` is decoupled, `pair` is not, `gone` has no ModelConfig; records each call."""

    sent: list[tuple[str, str, Passed]] = field(default_factory=list)
    # READY versions per model (None: the backends do not say), what they become when
    # the catalogs are read again, the versions no backend has any more, and the wait
    # each stream call was given
    ready: dict[str, frozenset[int]] | None = None
    ready_after_refresh: dict[str, frozenset[int]] | None = None
    unloaded: frozenset[int] = frozenset()
    waits: list[float | None] = field(default_factory=list)

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
        self.sent.append((method, model, metadata))
        if method == "ModelConfig":
            if model == "gone":
                raise NotFound("unknown model 'gone'")
            reply = pb.ModelConfigResponse()
            reply.config.name = model
            reply.config.model_transaction_policy.decoupled = model == "chat"
            return reply.SerializeToString()
        return pb.ModelInferResponse(model_name=model, model_version="1").SerializeToString()

    async def stream(
        self,
        request: bytes,
        deadline: float,
        metadata: Passed = (),
        model: str = "",
        version: int | None = None,
        wait: float | None = None,
    ) -> AsyncIterator[bytes]:
        self.sent.append(("stream", model, metadata))
        self.waits.append(wait)
        if version in self.unloaded:
            raise NotFound(f"model '{model}' has no version '{version}'")
        yield stream_reply(model, b"a", False)
        yield stream_reply(model, b"b", True)

    def ready_versions(self, model: str) -> frozenset[int] | None:
        return None if self.ready is None else self.ready.get(model, frozenset())

    def knows(self, model: str, version: int | None = None) -> bool | None:
        return None

    def want_catalogs(self) -> None:
        pass

    async def refresh_catalogs(self, deadline: float) -> None:
        if self.ready_after_refresh is not None:
            self.ready = self.ready_after_refresh


def router(backends: Backends, routes: RouteTable | None = None) -> Router:
    app = GatewayApp(routes, CanaryPolicy({}, random.Random(0)), None, lambda: True)
    return Router(app, backends, GatewayMetrics(CollectorRegistry()))


def call(model: str, key: ApiKey | None = None, passed: Passed = ()) -> Call:
    request = pb.ModelInferRequest(model_name=model).SerializeToString()
    deadline = asyncio.get_running_loop().time() + 5
    return Call(key, wire.read_head(request), request, deadline, passed=passed)


async def answers(r: Router, c: Call) -> list[pb.ModelStreamInferResponse]:
    return [pb.ModelStreamInferResponse.FromString(d) async for d in r.stream_infer(c)]


async def test_a_model_that_answers_once_keeps_the_unary_call_and_its_flag() -> None:
    backends = Backends()
    r = router(backends)
    for _ in range(3):
        (reply,) = await answers(r, call("pair"))
        assert reply.infer_response.model_name == "pair" and not reply.error_message
        assert reply.infer_response.parameters[FINAL].bool_param is True
    # Its ModelConfig is asked once, then remembered.
    assert [m for m, _, _ in backends.sent] == ["ModelConfig"] + ["ModelInfer"] * 3


async def test_a_decoupled_model_streams_every_response_from_one_backend_call() -> None:
    backends = Backends()
    r = router(backends)
    replies = await answers(r, call("chat"))
    assert [p.infer_response.raw_output_contents[0] for p in replies] == [b"a", b"b"]
    assert [m for m, _, _ in backends.sent] == ["ModelConfig", "stream"]


async def test_a_model_that_cannot_say_goes_the_stream_path_and_is_asked_again() -> None:
    backends = Backends()
    r = router(backends)
    await answers(r, call("gone"))
    await answers(r, call("gone"))
    assert [m for m, _, _ in backends.sent] == ["ModelConfig", "stream"] * 2


async def test_the_backend_gets_the_keys_id_and_never_one_the_caller_named() -> None:
    backends = Backends()
    r = router(backends)
    key = ApiKey("team-a", b"\0" * 32)
    named = (("x-maas-key-id", "someone-else"), ("x-request-id", "r-1"))
    await answers(r, call("chat", key, named))
    await answers(r, call("pair", key, named))
    await answers(r, call("pair", None, named))
    relayed = [metadata for method, _, metadata in backends.sent if method != "ModelConfig"]
    assert relayed == [
        (("x-request-id", "r-1"), ("x-maas-key-id", "team-a")),
        (("x-request-id", "r-1"), ("x-maas-key-id", "team-a")),
        (("x-request-id", "r-1"),),
    ]


async def test_a_stream_standing_in_on_a_version_that_is_gone_fails_over_without_waiting() -> None:
    # production moved to 2 while the catalogs (as last read) have only 1 READY: the
    # request stands in on 1, which the backends have unloaded meanwhile. Its first
    # try does not wait for 1; after the catalogs are read again it goes to 2 with the
    # whole wait (None: the pool's).
    routes = RouteTable()
    versions = [Version("chat", n, (), Signature()) for n in (1, 2)]
    routes.load(Snapshot(5, [ModelSnapshot(Model("chat", aliases={"production": 2}), versions)]))
    backends = Backends(
        ready={"chat": frozenset({1})},
        ready_after_refresh={"chat": frozenset({2})},
        unloaded=frozenset({1}),
    )
    replies = await answers(router(backends, routes), call("chat"))
    assert [p.infer_response.raw_output_contents[0] for p in replies] == [b"a", b"b"]
    assert not any(p.error_message for p in replies)
    assert backends.waits == [0.0, None]
