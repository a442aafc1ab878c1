"""The one status-to-error mapping clients use, and the common deadline and version helpers."""

from __future__ import annotations

import asyncio

import grpc

from services.common import errors
from services.common.deadlines import deadline_of, earliest
from services.common.version import server_version


def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


def test_every_status_maps_back_to_its_error_class() -> None:
    for cls in errors.ServiceError.__subclasses__():
        error = errors.error_from_rpc(rpc_error(grpc.StatusCode[cls.status], "why"))
        assert type(error) is cls and error.message == "why"
    unknown = errors.error_from_rpc(rpc_error(grpc.StatusCode.OUT_OF_RANGE, "far"))
    assert type(unknown) is errors.ServiceError and unknown.message == "OUT_OF_RANGE: far"
    assert errors.error_from_rpc(rpc_error(grpc.StatusCode.NOT_FOUND, "")).message == "NOT_FOUND"


class Context:
    def __init__(self, remaining: float | None) -> None:
        self.remaining = remaining

    def time_remaining(self) -> float | None:
        return self.remaining


async def test_deadlines_are_event_loop_times() -> None:
    now = asyncio.get_running_loop().time()
    assert deadline_of(Context(None)) is None
    assert now + 2 <= deadline_of(Context(None), 2.0) <= asyncio.get_running_loop().time() + 2
    assert now + 1 <= (deadline_of(Context(1.0)) or 0) <= asyncio.get_running_loop().time() + 1
    assert earliest(5.0, None) == 5.0 and earliest(5.0, 3.0) == 3.0
    assert server_version().count(".") >= 2
