"""Where the inference backends are: a static list, or a headless Service's DNS records.

A discoverer calls `update(addresses)` with the complete current set every time
it learns something; the pool makes its backends match. Kubernetes EndpointSlices
live in services.gateway.endpointslices.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Callable
from typing import Any, Protocol

_log = logging.getLogger(__name__)
Update = Callable[[list[str]], None]
Resolver = Callable[..., list[tuple[Any, ...]]]


class Discovery(Protocol):
    """Finds backends in the background until closed."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...


def host_port(host: str, port: int | str) -> str:
    """host:port, with IPv6 literals in brackets as gRPC targets want them."""
    try:
        if isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address):
            return f"[{host}]:{port}"
    except ValueError:
        pass
    return f"{host}:{port}"


def split_host_port(target: str) -> tuple[str, int]:
    """('name', port) from 'name:port' or '[v6]:port'."""
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"expected host:port, got {target!r}")
    return host.strip("[]"), int(port)


class StaticDiscovery:
    """A fixed list of backends."""

    def __init__(self, addresses: list[str], update: Update) -> None:
        self.addresses = addresses
        self.update = update

    async def start(self) -> None:
        self.update(list(self.addresses))

    async def close(self) -> None:
        return None


class DnsDiscovery:
    """Every A/AAAA record of a name is a backend; the name is resolved periodically.

    A failed lookup keeps the last known set: a DNS hiccup should not empty the pool.
    """

    def __init__(
        self,
        target: str,
        update: Update,
        *,
        interval: float = 5.0,
        resolver: Resolver = socket.getaddrinfo,
    ) -> None:
        self.host, self.port = split_host_port(target)
        self.update = update
        self.interval = interval
        self.resolver = resolver
        self._task: asyncio.Task[None] | None = None

    async def resolve(self) -> list[str]:
        """The current addresses (blocking getaddrinfo runs in a thread)."""
        infos = await asyncio.to_thread(self.resolver, self.host, self.port, 0, socket.SOCK_STREAM)
        return sorted({host_port(info[4][0], self.port) for info in infos})

    async def refresh(self) -> None:
        """Resolve once and report the result; keep the last set on failure."""
        try:
            addresses = await self.resolve()
        except OSError as exc:
            _log.warning(
                "backend DNS lookup failed", extra={"dns_name": self.host, "error": str(exc)}
            )
            return
        self.update(addresses)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.refresh()

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.ensure_future(self._loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
