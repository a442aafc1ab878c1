"""Random model names through the gateway (item 16): what unknown names cost the registry."""

from __future__ import annotations

import asyncio
import random
import string

from maas_proto.inference import grpc_predict_v2_pb2 as pb

from tools.hostile.metrics import added, calls_by_method, scrape
from tools.hostile.report import Category
from tools.hostile.requests import digits_request
from tools.hostile.system import HostileSystem
from tools.hostile.wire import INFER, channel, unary

CONCURRENCY = 16
ALPHABET = string.ascii_lowercase + string.digits + "-_."


def random_names(count: int, seed: int = 0) -> list[str]:
    """Names that follow the naming rule but that no model has."""
    rng = random.Random(seed)
    return [
        "n" + "".join(rng.choice(ALPHABET) for _ in range(rng.randint(3, 24))) for _ in range(count)
    ]


# Where an unknown name is sent, in turn: what a client may ask about a model.
TARGETS = (
    ("gateway", INFER),
    ("gateway", "ModelMetadata"),
    ("gateway", "ModelReady"),
    ("inference", INFER),
)


def request_for(method: str, name: str) -> bytes:
    """The `method` request about model `name`."""
    if method == INFER:
        request = digits_request()
        request.model_name = name
        return request.SerializeToString()
    if method == "ModelMetadata":
        return pb.ModelMetadataRequest(name=name).SerializeToString()
    return pb.ModelReadyRequest(name=name).SerializeToString()


async def run_names(system: HostileSystem, category: Category, count: int) -> None:
    """`count` calls about random unknown names, CONCURRENCY at a time, across TARGETS."""
    port = system.metrics_ports.get("registry", 0)
    before = calls_by_method(await asyncio.to_thread(scrape, port), "registry") if port else {}
    paths = system.server_paths()
    jobs = iter(enumerate(random_names(count)))
    async with (
        channel(system.address("gateway")) as gw,
        channel(system.address("inference")) as inference,
    ):
        chans = {"gateway": gw, "inference": inference}

        async def worker() -> None:
            for i, name in jobs:
                where, method = TARGETS[i % len(TARGETS)]
                metadata = (
                    system.client_metadata() if where == "gateway" else system.inference_metadata()
                )
                payload = request_for(method, name)
                outcome = await unary(chans[where], method, payload, metadata, 10.0)
                category.record(f"{where} {method.rsplit('/', 1)[-1]} {name!r}", outcome, paths)

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    if port:
        after = calls_by_method(await asyncio.to_thread(scrape, port), "registry")
        calls = added(before, after)
        category.figures["registry_calls"] = sum(calls.values())
        category.figures["registry_calls_by_method"] = calls
