"""Mutated and truncated ModelInfer messages, as raw bytes, one at a time to each port."""

from __future__ import annotations

import random

from tools.hostile.report import Category
from tools.hostile.requests import digits_request, other_request
from tools.hostile.system import HostileSystem
from tools.hostile.wire import INFER, channel, unary


def seeds() -> list[bytes]:
    """Valid messages to mutate: raw and typed contents, a batch, the second model."""
    return [
        digits_request().SerializeToString(),
        digits_request(typed=True).SerializeToString(),
        digits_request(batch=4, version="1").SerializeToString(),
        other_request(batch=2).SerializeToString(),
    ]


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One to four random edits: flip, set, insert, delete or repeat bytes."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        at = rng.randrange(len(out)) if out else 0
        if op == 0 and out:
            out[at] ^= 1 << rng.randrange(8)
        elif op == 1 and out:
            out[at] = rng.choice((0x00, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        elif op == 2:
            out[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 3 and out:
            del out[at : at + rng.randint(1, 16)]
        else:
            out[at:at] = out[at : at + rng.randint(1, 32)]
    return bytes(out)


def truncations(data: bytes, count: int, rng: random.Random) -> list[bytes]:
    """`count` prefixes of `data`, every length first when there are few enough."""
    lengths = list(range(len(data)))
    if len(lengths) > count:
        lengths = sorted(rng.sample(lengths, count))
    return [data[:n] for n in lengths]


async def run_mutated(
    system: HostileSystem, category: Category, mutated: int, truncated: int, seed: int = 0
) -> None:
    """`mutated` mutations and `truncated` prefixes to the gateway and to inference."""
    rng = random.Random(seed)
    base = seeds()
    paths = system.server_paths()
    for port in ("gateway", "inference"):
        metadata = system.client_metadata() if port == "gateway" else system.inference_metadata()
        async with channel(system.address(port)) as chan:
            for i in range(mutated):
                payload = mutate(base[i % len(base)], rng)
                category.record(
                    f"{port}: mutation {i}", await unary(chan, INFER, payload, metadata), paths
                )
            for payload in truncations(base[0], truncated, rng):
                name = f"{port}: truncated to {len(payload)} bytes"
                category.record(name, await unary(chan, INFER, payload, metadata), paths)
    category.figures["per_port"] = {"mutated": mutated, "truncated": truncated}
