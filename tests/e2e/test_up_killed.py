"""`maas up` killed with SIGKILL takes its services with it: no process left, ports free."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import start_system

SERVICES = ("registry", "inference", "gateway")


def gone(pid: int) -> bool:
    """Exited (or a zombie waiting for init to reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        try:
            sock.bind(("::", port))
        except OSError:
            return False
        return True


def test_sigkilled_maas_up_leaves_no_service_running(
    tmp_path_factory: pytest.TempPathFactory, demo_export: Path
) -> None:
    system = start_system(tmp_path_factory.mktemp("killed"), demo_export)
    pids = {name: system.pid(name) for name in SERVICES}
    try:
        assert not any(gone(pid) for pid in pids.values())
        assert not any(bindable(system.ports[name]) for name in SERVICES)

        system.process.send_signal(signal.SIGKILL)
        system.process.wait(10)
        deadline = time.monotonic() + 60
        while not all(gone(pid) for pid in pids.values()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [name for name, pid in pids.items() if not gone(pid)] == []
        assert [name for name in SERVICES if not bindable(system.ports[name])] == []
    finally:
        if system.process.poll() is None:
            system.process.kill()
        for pid in pids.values():
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)
