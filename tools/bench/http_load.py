"""HTTP load: the gateway's KServe v2 REST infer, as JSON or with Triton's binary tensor
data extension, from the same processes and window as the gRPC load generator.

Each process holds one aiohttp session whose keep-alive pool has a connection per call
in flight (HTTP/1.1 has one request at a time per connection), sends prebuilt bodies
and reads each answer whole without parsing it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal

import numpy as np
import orjson

from tools.bench.loadgen import LoadResult, measure, run_load

Encoding = Literal["json", "binary"]
HEADER_LENGTH = "Inference-Header-Content-Length"


@dataclass(frozen=True)
class HttpBody:
    """One prebuilt infer request: its body and the headers that go with it."""

    data: bytes
    headers: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class HttpLoadSpec:
    """What one HTTP level sends: as LoadSpec, to a URL, with prebuilt bodies."""

    url: str  # http://host:port/v2/models/<model>/infer
    bodies: tuple[HttpBody, ...]
    concurrency: int
    seconds: float
    warmup: float = 1.0
    processes: int = 2
    timeout: float = 30.0


def infer_body(inputs: dict[str, np.ndarray], encoding: Encoding) -> HttpBody:
    """A v2 REST infer body: tensors as flat JSON `data`, or as binary data after the
    JSON header, asking for binary outputs too (Triton's binary tensor data extension)."""
    from services.common.datatypes import by_numpy

    tensors: list[dict[str, object]] = []
    raw: list[bytes] = []
    for name, array in inputs.items():
        tensor: dict[str, object] = {
            "name": name,
            "datatype": by_numpy(array.dtype).name,
            "shape": list(array.shape),
        }
        if encoding == "json":
            tensor["data"] = array.ravel().tolist()
        else:
            data = np.ascontiguousarray(array).tobytes()
            tensor["parameters"] = {"binary_data_size": len(data)}
            raw.append(data)
        tensors.append(tensor)
    document: dict[str, object] = {"inputs": tensors}
    if encoding == "json":
        return HttpBody(orjson.dumps(document), (("Content-Type", "application/json"),))
    document["parameters"] = {"binary_data_output": True}
    header = orjson.dumps(document)
    headers = (("Content-Type", "application/octet-stream"), (HEADER_LENGTH, str(len(header))))
    return HttpBody(header + b"".join(raw), headers)


def run_http_load(spec: HttpLoadSpec) -> LoadResult:
    """Drive one HTTP level from `spec.processes` processes, merged as run_load merges."""
    return run_load(spec, main=_process_main)


def _process_main(spec: HttpLoadSpec, share: int, offset: int, start: float) -> LoadResult:
    return asyncio.run(_drive(spec, share, offset, start))


async def _drive(spec: HttpLoadSpec, share: int, offset: int, start: float) -> LoadResult:
    import aiohttp

    result = LoadResult(window=spec.seconds)
    connector = aiohttp.TCPConnector(limit=share, force_close=False)
    timeout = aiohttp.ClientTimeout(total=spec.timeout)
    bodies = [(b.data, dict(b.headers)) for b in spec.bodies]
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        async with session.post(spec.url, data=bodies[0][0], headers=bodies[0][1]) as first:
            answer = await first.read()
            if first.status != 200:
                raise RuntimeError(f"the target answered {first.status}: {answer[:300]!r}")
            result.completed = 1

        async def send(i: int) -> str:
            data, headers = bodies[i % len(bodies)]
            try:
                async with session.post(spec.url, data=data, headers=headers) as response:
                    await response.read()
                    return "" if response.status == 200 else f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                return type(exc).__name__

        await measure(result, spec.warmup, share, offset, start, send)
    return result
