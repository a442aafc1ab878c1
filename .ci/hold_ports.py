"""Listen on the given TCP ports until killed, as a running `make run` would.

CI runs the tests while this holds every default port, so a test server that
binds a default port instead of port 0 fails there. A port something else
already holds is left to it: it is taken either way.
"""

from __future__ import annotations

import signal
import socket
import sys


def hold(port: int) -> socket.socket | None:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    # Dual-stack, like the services' `[::]`: IPv4 binds of the port fail too.
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    try:
        sock.bind(("::", port))
    except OSError as exc:
        sys.stderr.write(f"hold_ports: port {port} is already taken ({exc.strerror})\n")
        sock.close()
        return None
    sock.listen()
    return sock


def main() -> None:
    held = [s for s in (hold(int(p)) for p in sys.argv[1:]) if s is not None]
    sys.stdout.write(f"holding {len(held)} ports\n")
    sys.stdout.flush()
    signal.sigwait({signal.SIGTERM, signal.SIGINT})


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    main()
