"""Services started by tools/processes.py (as `maas up` does) die with their supervisor."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tests.servers import ROOT

# A supervisor like `maas up`: it starts a registry, prints its pid and port, then waits.
SUPERVISOR = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from tools.processes import ServiceProcess

    work = Path(sys.argv[1])
    child = ServiceProcess(
        "registry",
        ["--data-dir", str(work / "data"), "--no-auth", "--grace-seconds", "1"],
        log_path=work / "registry.log",
        port_file=work / "registry.port",
        new_session=True,
    )
    child.wait_for_port()
    print(child.pid, child.port, flush=True)
    sys.stdin.read()
    """
)


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


def test_children_stop_and_free_their_ports_when_the_supervisor_is_sigkilled(
    tmp_path: Path,
) -> None:
    supervisor = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR, str(tmp_path)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    child = 0
    try:
        assert supervisor.stdout is not None
        pid, port = (int(v) for v in supervisor.stdout.readline().split())
        child = pid
        assert not gone(child) and not bindable(port)

        supervisor.send_signal(signal.SIGKILL)
        supervisor.wait(10)
        deadline = time.monotonic() + 30
        while not gone(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gone(child), (tmp_path / "registry.log").read_text()[-2000:]
        assert bindable(port)
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait(10)
        if child and not gone(child):
            os.kill(child, signal.SIGKILL)
