"""A throwaway PostgreSQL that accepts only TLS, on a TCP loopback port.

Like tests/unit/registry/registry_pg.py (the local initdb/pg_ctl, run as the
`postgres` user when we are root), but with ssl=on, the certificate given, and a
pg_hba.conf that allows `hostssl` only, so a plaintext connection is refused.
PostgreSQL cannot bind port 0, so a random port is tried until one binds. Its
directory is made in the system temporary directory (pytest's is private to root,
where the `postgres` user cannot reach) and removed afterwards.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.tlscerts import Issued
from tests.unit.registry.registry_pg import _as_owner, _binaries

_ATTEMPTS = 8


@contextmanager
def tls_cluster(server: Issued) -> Iterator[int]:
    """Start the cluster serving `server`'s certificate; yields its port."""
    bindir = _binaries()
    if bindir is None:
        pytest.skip("PostgreSQL not available: no initdb/pg_ctl")
    user = "postgres" if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="maas-pgtls-"))
    data = root / "data"
    cert, key = root / "server.pem", root / "server.key"
    shutil.copyfile(server.cert, cert)
    shutil.copyfile(server.key, key)
    key.chmod(0o600)  # PostgreSQL refuses a key others can read
    if user:
        for path in (root, cert, key):
            shutil.chown(path, user)
    run = {"check": True, "capture_output": True, "timeout": 60}
    initdb = [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"]
    subprocess.run(_as_owner([*initdb, "--no-sync", "-E", "UTF8", "--locale=C"], user), **run)  # type: ignore[call-overload]
    (data / "pg_hba.conf").write_text("local all all trust\nhostssl all all 127.0.0.1/32 trust\n")
    pg_ctl = str(bindir / "pg_ctl")
    port = 0
    try:
        for _ in range(_ATTEMPTS):
            port = random.randrange(20_000, 50_000)
            options = (
                f"-k {root} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off "
                f"-c ssl=on -c ssl_cert_file={cert} -c ssl_key_file={key}"
            )
            started = subprocess.run(
                _as_owner(
                    [
                        pg_ctl,
                        "-D",
                        str(data),
                        "-l",
                        str(root / "log"),
                        "-o",
                        options,
                        "-w",
                        "start",
                    ],
                    user,
                ),
                capture_output=True,
                timeout=60,
            )
            if started.returncode == 0:
                break
        else:
            log = (root / "log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"PostgreSQL with TLS did not start:\n{log}")
        yield port
    finally:
        subprocess.run(
            _as_owner([pg_ctl, "-D", str(data), "-m", "immediate", "stop"], user),
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(root, ignore_errors=True)
