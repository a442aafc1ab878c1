"""How an HTTP request's headers become the app layer's inputs: metadata and deadline."""

from __future__ import annotations

import asyncio

import pytest
from starlette.requests import Request

from services.common.errors import InvalidArgument
from services.gateway.http.calls import TIMEOUT_HEADER, deadline, metadata


def request(*headers: tuple[str, str]) -> Request:
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    return Request({"type": "http", "method": "GET", "path": "/v2", "headers": raw})


def test_headers_are_metadata_with_lower_case_names() -> None:
    got = metadata(request(("Authorization", "Bearer k"), ("X-Maas-Version", "2")))
    assert got == [("authorization", "Bearer k"), ("x-maas-version", "2")]


async def test_deadline_is_the_default_or_the_timeout_header() -> None:
    now = asyncio.get_running_loop().time()
    assert now + 29 < deadline(request(), 30.0) <= asyncio.get_running_loop().time() + 30
    short = deadline(request((TIMEOUT_HEADER, "250")), 30.0)
    assert now < short <= asyncio.get_running_loop().time() + 0.25


@pytest.mark.parametrize("value", ["soon", "0", "-5", "nan", "inf", "1e999", "x" * 500])
async def test_a_bad_timeout_names_the_header(value: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        deadline(request((TIMEOUT_HEADER, value)), 30.0)
    assert TIMEOUT_HEADER in caught.value.message
    assert len(caught.value.message) < 200
