"""The hand-made cases of issue B (items 1-3, 11, 13-16), one request at a time.

Each is sent alone on an otherwise idle system, to the gateway and to inference,
with its own RSS window. A case of a megabyte or more is preceded by a
well-formed request of the same size, whose cost the RSS goal allows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import grpc
from maas_proto.inference import grpc_predict_v2_pb2 as pb

from tools.hostile.measure import Meter
from tools.hostile.report import Case, Category
from tools.hostile.requests import digits_request, same_size_reference, tensor_request
from tools.hostile.system import HostileSystem
from tools.hostile.wire import INFER, Outcome, channel, stream, unary

PORTS = ("gateway", "inference")
Auth = tuple[tuple[str, str], ...]
REFERENCE_FROM = 1 << 20


INVALID = frozenset({"INVALID_ARGUMENT"})
TOO_BIG = frozenset({"INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"})
UNKNOWN_NAME = frozenset({"INVALID_ARGUMENT", "NOT_FOUND"})
OK = frozenset({"OK"})


@dataclass(frozen=True)
class Handmade:
    """A named request; `build` makes its bytes only when it is sent.

    `expect` is the codes the issue allows, for both ports or per port (a port
    left out may answer anything but INTERNAL or UNKNOWN).
    """

    name: str
    build: Callable[[], bytes]
    expect: frozenset[str] | dict[str, frozenset[str]] = INVALID
    header: tuple[tuple[str, str], ...] = ()

    def expected(self, port: str) -> frozenset[str] | None:
        if isinstance(self.expect, dict):
            return self.expect.get(port)
        return self.expect


def _bytes(request: pb.ModelInferRequest) -> Callable[[], bytes]:
    return request.SerializeToString


def _version(version: str) -> Callable[[], bytes]:
    return digits_request(version=version).SerializeToString


def _named(name: str) -> Callable[[], bytes]:
    request = digits_request()
    request.model_name = name
    return request.SerializeToString


def cases(short: bool) -> list[Handmade]:
    """Every case; `short` shrinks only the batch that would cost gigabytes before item 3."""
    over_batch = 1024 if short else 258048
    head = pb.ModelInferRequest(model_name="digits").SerializeToString()
    bad_name = {"gateway": INVALID, "inference": UNKNOWN_NAME}  # item 13: the gateway decides
    return [
        # item 1: 32 MB of an unknown varint field after the head
        Handmade("padding 32 MB", lambda: head + b"\x78\x00" * (16 << 20), TOO_BIG),
        # item 2: BYTES shapes allocated before any size check
        Handmade(
            "BYTES [200000000] (37 bytes)",
            _bytes(tensor_request("BYTES", [200_000_000])),
            TOO_BIG,
        ),
        Handmade("BYTES [1e9,1,8,8]", _bytes(tensor_request("BYTES", [10**9, 1, 8, 8])), TOO_BIG),
        Handmade(
            "BYTES 10M empty elements (40 MB)",
            lambda: tensor_request("BYTES", [10_000_000], b"\0" * 40_000_000).SerializeToString(),
            TOO_BIG,
        ),
        # item 3: dimension 0 over max_batch_size (32)
        Handmade(
            f"batch {over_batch} > max_batch_size",
            lambda: digits_request(batch=over_batch).SerializeToString(),
        ),
        # item 14: client errors that came back INTERNAL
        Handmade("rank 70", _bytes(tensor_request("FP32", [1] * 70, b"\0" * 4))),
        Handmade("version '1'*5000", _version("1" * 5000)),
        Handmade(
            "x-maas-version '1'*5000",
            _version(""),
            {"gateway": INVALID},  # inference serves what it is asked, header or not
            (("x-maas-version", "1" * 5000),),
        ),
        Handmade("version '²'", _version("²")),
        # item 16: non-canonical versions; latest on both
        Handmade("version '01'", _version("01")),
        Handmade("version '١'", _version("١")),
        Handmade("version 'latest'", _version("latest"), OK),
        # item 13: bad names
        Handmade("name 'digits '", _named("digits "), bad_name),
        Handmade("name 'dig\\0its'", _named("dig\0its"), bad_name),
        Handmade("name '../../etc/passwd'", _named("../../etc/passwd"), bad_name),
        Handmade("name of 64 KB", _named("d" * 65536), bad_name),
        Handmade("empty name", _named(""), UNKNOWN_NAME),
        # item 11 and 16: undecodable messages, groups
        Handmade("undecodable ff ff ff", lambda: b"\xff\xff\xff"),
        Handmade("group (wire type 3)", lambda: b"\x0a\x06digits\x0b\x0c"),
        Handmade("length past the end", lambda: b"\x0a\xff\xff\xff\xff\x0f"),
        Handmade("truncated tensor", lambda: b"\x0a\x06digits\x2a\x80"),
    ]


REGISTRY_GET = "/maas.registry.v1.ModelRegistry/GetModel"


def registry_cases() -> list[Handmade]:
    """The cases any service's request decoding must survive, sent to the registry."""
    head = b"\x0a\x06digits"  # GetModelRequest(name="digits")
    return [
        # Unknown fields are valid protobuf: any answer but INTERNAL or UNKNOWN, cheaply.
        Handmade("padding 32 MB", lambda: head + b"\x78\x00" * (16 << 20), {}),
        Handmade("undecodable ff ff ff", lambda: b"\xff\xff\xff"),
        Handmade("group (wire type 3)", lambda: head + b"\x0b\x0c"),
    ]


async def run_handmade(
    system: HostileSystem, category: Category, meter: Meter, short: bool
) -> None:
    """Every case to each port, alone; then item 15's stream with a bad message inside."""
    paths = system.server_paths()
    unexpected: list[str] = category.figures.setdefault("unexpected_codes", [])

    async def send(
        chan: grpc.aio.Channel, port: str, method: str, case: Handmade, auth: Auth
    ) -> None:
        payload = case.build()
        reference: dict[str, float] = {}
        reference_stall: dict[str, float] = {}
        if len(payload) >= REFERENCE_FROM:
            ref = same_size_reference(len(payload))
            with meter.case(alone=True) as ref_window:
                await unary(chan, method, ref, auth)
            reference, reference_stall = ref_window.growth_mb(), ref_window.stall_ms
            worst = category.figures.setdefault("reference_stall_ms", {})
            for service, ms in reference_stall.items():
                worst[service] = round(max(worst.get(service, 0.0), ms), 1)
            del ref
        with meter.case() as window:
            outcome = await unary(chan, method, payload, (*auth, *case.header))
        del payload
        name = f"{port}: {case.name}"
        category.record(name, outcome, paths)
        expected = case.expected(port)
        if expected is not None and outcome.code not in expected:
            wanted = " or ".join(sorted(expected))
            unexpected.append(f"{name}: {outcome.code}, expected {wanted}")
        category.cases.append(
            Case(
                name, outcome.code, window.growth_mb(), reference, window.stall_ms, reference_stall
            )
        )

    for port in PORTS:
        auth = system.client_metadata() if port == "gateway" else system.inference_metadata()
        async with channel(system.address(port)) as chan:
            for case in cases(short):
                await send(chan, port, INFER, case, auth)
            await _bad_message_in_stream(chan, port, auth, category, paths)
    token = system.admin_token
    admin: Auth = (("authorization", f"Bearer {token}"),) if token else ()
    async with channel(system.address("registry")) as chan:
        for case in registry_cases():
            await send(chan, "registry", REGISTRY_GET, case, admin)
    for port, answered in category.figures["stream_valid_answered"].items():
        if answered != "3/3":  # item 15: one bad message costs only its own answer
            unexpected.append(f"{port}: stream with a bad message: {answered} valid answered")


async def _bad_message_in_stream(
    chan: grpc.aio.Channel,
    port: str,
    auth: tuple[tuple[str, str], ...],
    category: Category,
    paths: list[str],
) -> None:
    valid = digits_request().SerializeToString()
    end, replies = await stream(chan, [valid, b"\xff\xff\xff", valid, valid], auth)
    name = f"{port}: stream [valid, ff ff ff, valid, valid]"
    for reply in replies:
        category.record(name, reply, paths)
    category.record(f"{name} (end)", end, paths)
    answered = sum(r.ok for r in replies)
    category.figures.setdefault("stream_valid_answered", {})[port] = f"{answered}/3"


__all__ = ["Outcome", "run_handmade"]
