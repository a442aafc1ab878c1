"""A child service stops when the process that started it is gone, even by SIGKILL.

The parent passes the read end of a pipe it never writes to (its fd number in
MAAS_LIFELINE_FD) and keeps the write end. When the parent exits, however it
exits, the kernel closes the write end, the read returns EOF, and the child
sends itself SIGTERM: a graceful stop once its handlers are installed, plain
termination before. Unlike PR_SET_PDEATHSIG this does not depend on which of
the parent's threads started the child.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import MutableMapping

LIFELINE_ENV = "MAAS_LIFELINE_FD"


def watch_lifeline(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Start watching the parent's pipe, if one was passed; whether one was."""
    value = environ.pop(LIFELINE_ENV, None)  # not inherited by our own children
    if not value:
        return False
    fd = int(value)
    try:
        os.fstat(fd)
    except OSError:
        return False  # a stale value from some other process's environment

    def wait() -> None:
        try:
            while os.read(fd, 4096):
                pass
        except OSError:
            pass
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=wait, name="lifeline", daemon=True).start()
    return True
