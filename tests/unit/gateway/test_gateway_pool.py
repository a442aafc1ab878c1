"""The backend pool's ejection and probing, and DNS discovery, with fakes for time and DNS."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from services.gateway.backends import PoolOptions
from services.gateway.balancer import Health
from services.gateway.discovery import DnsDiscovery, host_port, split_host_port
from services.gateway.pool import BackendPool


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_unreachable_backend_is_ejected_then_probed_with_growing_backoff() -> None:
    clock = Clock()
    options = PoolOptions(
        max_message_bytes=1 << 20,
        eject_base_seconds=1.0,
        eject_max_seconds=4.0,
        probe_timeout_seconds=0.2,
    )
    pool = BackendPool(options, clock=clock)
    pool.update(["localhost:1"])  # nothing listens there
    backend = pool.backends["localhost:1"]
    assert backend.state.health is Health.PROBING
    try:
        await pool.probe_due()
        assert (backend.state.health, backend.state.ejected_until) == (Health.EJECTED, 1.0)
        assert pool.pick(set()) is None and pool.healthy() == 0
        await pool.probe_due()  # not due yet: nothing changes
        assert backend.state.ejected_until == 1.0
        for now, until in ((1.0, 3.0), (3.0, 7.0), (7.0, 11.0)):
            clock.now = now
            await pool.probe_due()
            assert backend.state.ejected_until == until  # 2 s, 4 s, then capped at 4 s
        pool.update([])
        assert pool.backends == {}
    finally:
        await pool.close()


async def test_dns_discovery_reports_every_record_and_keeps_the_last_set_on_failure() -> None:
    answers: list[Any] = [
        [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.2", 8021)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.1", 8021)),
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("fd00::1", 8021, 0, 0)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.1", 8021)),
        ],
        socket.gaierror("temporary failure"),
        [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.3", 8021))],
    ]
    asked: list[tuple[Any, ...]] = []

    def resolver(*args: Any) -> Any:
        asked.append(args)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    seen: list[list[str]] = []
    dns = DnsDiscovery("inference.maas.svc:8021", seen.append, resolver=resolver)
    for _ in range(3):
        await dns.refresh()
    assert seen == [
        ["10.0.0.1:8021", "10.0.0.2:8021", "[fd00::1]:8021"],
        ["10.0.0.3:8021"],
    ]
    assert asked[0][:2] == ("inference.maas.svc", 8021)


def test_addresses() -> None:
    assert host_port("::1", 80) == "[::1]:80" and host_port("a.b", 80) == "a.b:80"
    assert split_host_port("[::1]:80") == ("::1", 80)
    with pytest.raises(ValueError, match="expected host:port"):
        split_host_port("no-port")
