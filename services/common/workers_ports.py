"""The ports a supervisor's workers share, held so that no other process can join them.

SO_REUSEPORT lets any process of the same user bind a port that is already bound with
it, which would let a stale `maas up` silently take half the connections (issue A,
item 8). So the supervisor, before any worker starts:

- binds a socket of its own on every address of the port with SO_REUSEPORT but
  without SO_REUSEADDR, and never listens on it: a plain server (grpc's
  `so_reuseport=0`) cannot bind beside it, and the port stays the supervisor's while
  a worker restarts; with port 0 the kernel picks a port no reuse-port socket holds;
- takes an exclusive flock on `<tmp>/maas-port-<port>.lock`: a second supervisor,
  which could bind beside the first one's reuse-port workers, fails on the lock.

Both failures are PortInUse, the same one line as a single process's port in use. The
workers bind with `grpc.so_reuseport=1` (uvicorn's socket with SO_REUSEPORT), which
only sockets of this user that set it too may share.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from services.common.server import PortInUse
from services.common.settings import ServiceSettings


def lock_path(port: int) -> Path:
    """The lock file a supervisor holds for `port` (one per port, any address)."""
    return Path(tempfile.gettempdir()) / f"maas-port-{port}.lock"


@dataclass
class Reservation:
    """One shared port: the supervisor's unlistened sockets and its lock."""

    setting: str
    port: int
    sockets: list[socket.socket] = field(default_factory=list)
    lock_fd: int | None = None

    def close(self) -> None:
        """Give the port up (after every worker has stopped)."""
        for sock in self.sockets:
            sock.close()
        self.sockets.clear()
        if self.lock_fd is not None:
            os.close(self.lock_fd)  # releases the flock
            self.lock_fd = None


def reserve(host: str, port: int, setting: str, settings: ServiceSettings) -> Reservation:
    """Hold `port` (0: a free one) on every address of `host`; PortInUse when taken."""
    reservation = Reservation(setting, port)
    try:
        infos = socket.getaddrinfo(
            host.strip("[]") or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        for family, kind, proto, _, address in infos:
            sock = socket.socket(family, kind, proto)
            reservation.sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            # Every address on the port the first one got (port 0 picks it once).
            sock.bind((address[0], reservation.port, *address[2:]))
            reservation.port = int(sock.getsockname()[1])
        reservation.lock_fd = _lock(reservation.port)
    except OSError as exc:
        reservation.close()
        if exc.errno in (errno.EADDRINUSE, errno.EAGAIN, errno.EACCES, errno.EPERM):
            raise PortInUse(reservation.port or port, setting, settings) from None
        raise
    return reservation


def _lock(port: int) -> int:
    """An exclusive flock on the port's lock file, or OSError(EAGAIN) if another holds it."""
    fd = os.open(lock_path(port), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    return fd
