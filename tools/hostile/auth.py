"""Keys and boundaries (items 7, 8, 10): header variants, a limited key, the inference port.

A "bypass" is a reply that gives a caller what its key does not allow: data
about `digits` to the key limited to OTHER_MODEL, or an inference answered on the
inference port without the credential the gateway uses.
"""

from __future__ import annotations

import grpc
from google.protobuf.message import Message
from maas_proto.inference import grpc_predict_v2_pb2 as pb

from services.common.tokens import hash_token
from tools.hostile.report import Category
from tools.hostile.requests import digits_request, other_request
from tools.hostile.system import FULL_KEY, HostileSystem
from tools.hostile.wire import INFER, Metadata, channel, unary
from tools.up import DEMO_MODEL


def header_variants() -> list[tuple[str, Metadata]]:
    """Authorization headers that hold no usable key: each must be refused.

    (Variants of the right key in a loose spelling, a lowercase `bearer` or extra
    spaces, are a matter of parsing, not of access, and are left out.)
    """
    return [
        ("no header", ()),
        ("empty", (("authorization", ""),)),
        ("Bearer, no key", (("authorization", "Bearer"),)),
        ("Bearer and a space", (("authorization", "Bearer "),)),
        ("wrong key", bearer("not-a-key")),
        ("key prefix", bearer(FULL_KEY[:-1])),
        ("key and more", bearer(f"{FULL_KEY}x")),
        ("upper-case key", bearer(FULL_KEY.upper())),
        ("key of another service", bearer("services")),
        ("4 KiB + 1 token", bearer("k" * 4097)),
        ("15 KB token", bearer("k" * (15 * 1024))),
        ("1 MB token", bearer("k" * (1 << 20))),
        ("key's sha256 as the key", bearer(hash_token(FULL_KEY))),
        ("x-api-key header", (("x-api-key", FULL_KEY),)),
        ("key in another header", (("x-authorization", f"Bearer {FULL_KEY}"),)),
        ("tab", (("authorization", f"Bearer\t{FULL_KEY}"),)),
        ("non-ASCII key", bearer("ключ")),
        ("NUL in key", bearer(f"{FULL_KEY}\0")),
        ("binary header", (("authorization-bin", FULL_KEY),)),
        ("comma list", bearer(f"x, Bearer {FULL_KEY}")),
    ]


def bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


def loose_spellings() -> list[tuple[str, Metadata]]:
    """The right key spelled loosely: recorded (codes, leaks), never a bypass."""
    return [
        ("lowercase bearer", (("authorization", f"bearer {FULL_KEY}"),)),
        ("two spaces", (("authorization", f"Bearer  {FULL_KEY}"),)),
        ("trailing space", (("authorization", f"Bearer {FULL_KEY} "),)),
        ("key without scheme", (("authorization", FULL_KEY),)),
        ("Basic scheme", (("authorization", f"Basic {FULL_KEY}"),)),
        ("wrong then right", (("authorization", "Bearer no"), *bearer(FULL_KEY))),
    ]


async def run_auth(system: HostileSystem, category: Category) -> None:
    """Every header variant on a digits ModelInfer, then the limited key's boundaries."""
    paths = system.server_paths()
    bypasses: list[str] = []
    infer = digits_request().SerializeToString()
    async with channel(system.address("gateway")) as gw:
        variants = [(*v, True) for v in header_variants()]
        variants += [(*v, False) for v in loose_spellings()]
        for name, metadata, must_refuse in variants:
            try:
                outcome = await unary(gw, INFER, infer, metadata, 10.0)
            except Exception:  # noqa: BLE001 - grpc itself refuses some metadata before sending
                category.figures.setdefault("refused_by_client", []).append(name)
                continue
            category.record(f"gateway: {name}", outcome, paths)
            if outcome.ok and must_refuse:
                bypasses.append(f"gateway ModelInfer with {name}")
            if not must_refuse:
                category.figures.setdefault("loose_spellings", {})[name] = outcome.code
        await _limited(system, gw, category, bypasses)
    async with channel(system.address("inference")) as direct:
        outcome = await unary(direct, INFER, infer, (), 10.0)
        category.record("inference: ModelInfer without a credential", outcome, paths)
        category.figures["inference_without_credential"] = outcome.code
        if outcome.ok:
            bypasses.append("inference ModelInfer without a credential (item 8)")
    category.figures["bypasses"] = bypasses


def limited_calls() -> list[tuple[str, str, bytes]]:
    """(case, method, request) a key limited to OTHER_MODEL sends about digits."""
    dup = other_request().SerializeToString() + b"\x0a\x06" + DEMO_MODEL.encode()
    digits = DEMO_MODEL
    return [
        ("ModelInfer digits", INFER, digits_request().SerializeToString()),
        ("ModelInfer othermodel, then model_name digits", INFER, dup),
        ("ModelMetadata digits", "ModelMetadata", _b(pb.ModelMetadataRequest(name=digits))),
        ("ModelReady digits", "ModelReady", _b(pb.ModelReadyRequest(name=digits))),
        ("ModelConfig digits", "ModelConfig", _b(pb.ModelConfigRequest(name=digits))),
        ("ModelStatistics ''", "ModelStatistics", _b(pb.ModelStatisticsRequest())),
        ("ModelStatistics '' v1", "ModelStatistics", _b(pb.ModelStatisticsRequest(version="1"))),
        ("ModelStatistics digits", "ModelStatistics", _b(pb.ModelStatisticsRequest(name=digits))),
        ("RepositoryIndex", "RepositoryIndex", _b(pb.RepositoryIndexRequest())),
    ]


def _b(message: Message) -> bytes:
    return message.SerializeToString()


async def _limited(
    system: HostileSystem, gw: grpc.aio.Channel, category: Category, bypasses: list[str]
) -> None:
    limited = system.client_metadata(limited=True)
    paths = system.server_paths()
    for name, method, payload in limited_calls():
        outcome = await unary(gw, method, payload, limited, 10.0)
        category.record(f"limited key: {name}", outcome, paths)
        category.figures.setdefault("limited_key", {})[name] = outcome.code
        if outcome.ok and _about_digits(method, outcome.body):
            bypasses.append(f"limited key: {name} returned data about {DEMO_MODEL}")


def _about_digits(method: str, body: bytes) -> bool:
    """Whether an OK reply tells the limited key anything about digits."""
    if method.endswith("ModelInfer"):
        return pb.ModelInferResponse.FromString(body).model_name == DEMO_MODEL
    if method == "ModelStatistics":
        stats = pb.ModelStatisticsResponse.FromString(body).model_stats
        return any(s.name == DEMO_MODEL for s in stats)
    if method == "RepositoryIndex":
        return any(m.name == DEMO_MODEL for m in pb.RepositoryIndexResponse.FromString(body).models)
    if method == "ModelReady":
        return pb.ModelReadyResponse.FromString(body).ready
    return True
