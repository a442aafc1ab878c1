"""Bytes that are no request message, sent to the registry (issue B, item 11).

grpc core used to parse them before any interceptor: UNKNOWN with a Python class
name in the details, and an ERROR traceback in the log for every call.
"""

from __future__ import annotations

import grpc
import pytest

from services.common.decoding import UNDECODABLE
from tests.integration.registry.conftest import ADMIN, Running

SERVICE = "/maas.registry.v1.ModelRegistry"
AUTH = (("authorization", f"Bearer {ADMIN}"),)
BAD = b"\xff\xff\xff"


async def test_undecodable_unary_and_stream_requests_are_invalid_argument(
    registry: Running,
) -> None:
    async with grpc.aio.insecure_channel(registry.address) as channel:
        calls = [
            channel.unary_unary(f"{SERVICE}/GetModel")(BAD, metadata=AUTH, timeout=30),
            channel.unary_stream(f"{SERVICE}/DownloadVersion")(BAD, metadata=AUTH, timeout=30),
            channel.stream_unary(f"{SERVICE}/UploadVersion")(
                iter([BAD]), metadata=AUTH, timeout=30
            ),
        ]
        for call in calls:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                if hasattr(call, "__aiter__"):
                    async for _ in call:
                        pass
                else:
                    await call
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert caught.value.details() == UNDECODABLE
