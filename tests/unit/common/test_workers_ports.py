"""The supervisor's hold on a shared port: reuse-port sockets of its own join it, a
plain listener cannot bind beside it, and a second supervisor fails on the lock."""

from __future__ import annotations

import errno
import socket

import pytest

from services.common.server import PortInUse
from services.common.settings import ServiceSettings
from services.common.workers_ports import lock_path, reserve

SETTINGS = ServiceSettings()


def listener(port: int, reuse_port: bool) -> socket.socket:
    """A listening socket on 127.0.0.1:port as grpc makes one (SO_REUSEADDR on)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind(("127.0.0.1", port))
        sock.listen()
    except OSError:
        sock.close()
        raise
    return sock


def test_workers_join_a_reserved_port_and_a_plain_server_cannot() -> None:
    held = reserve("127.0.0.1", 0, "port", SETTINGS)
    try:
        assert held.port > 0 and lock_path(held.port).exists()
        workers = [listener(held.port, reuse_port=True) for _ in range(2)]
        with pytest.raises(OSError) as caught:
            listener(held.port, reuse_port=False)
        assert caught.value.errno == errno.EADDRINUSE
        for sock in workers:
            sock.close()
    finally:
        held.close()


def test_a_second_supervisor_fails_on_the_lock() -> None:
    held = reserve("127.0.0.1", 0, "port", SETTINGS)
    try:
        # Reuse-port workers let the second one's sockets bind: the lock refuses it.
        worker = listener(held.port, reuse_port=True)
        with pytest.raises(PortInUse, match=f"port {held.port} is in use"):
            reserve("127.0.0.1", held.port, "port", SETTINGS)
        worker.close()
    finally:
        held.close()
    # Given up, the port can be held again.
    again = reserve("127.0.0.1", held.port, "port", SETTINGS)
    again.close()


def test_a_port_a_plain_server_listens_on_is_in_use() -> None:
    plain = listener(0, reuse_port=False)
    try:
        port = plain.getsockname()[1]
        with pytest.raises(PortInUse, match=f"port {port} is in use"):
            reserve("127.0.0.1", port, "port", SETTINGS)
    finally:
        plain.close()
