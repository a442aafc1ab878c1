"""A PostgreSQL server for the registry tests: $MAAS_TEST_POSTGRES_URL, or a throwaway
cluster from the local initdb/pg_ctl (run as the `postgres` user when we are root).

The cluster is started once per process, listens only on a Unix socket in a
private temporary directory, and is removed at exit. Each test gets its own schema.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import pytest

ENV_URL = "MAAS_TEST_POSTGRES_URL"
_PORT = 54329
_state: dict[str, str] = {}


def _binaries() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    return Path(candidates[0]).parent if candidates else None


def _as_owner(command: list[str], user: str | None) -> list[str]:
    return ["runuser", "-u", user, "--", *command] if user else command


def _start_cluster() -> str:
    bindir = _binaries()
    if bindir is None:
        raise RuntimeError(f"no PostgreSQL: set {ENV_URL} or install postgresql (initdb, pg_ctl)")
    user = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise RuntimeError("running as root and there is no 'postgres' user") from None
        user = "postgres"
    root = Path(tempfile.mkdtemp(prefix="maas-pg-"))
    if user:
        shutil.chown(root, user)
    data = root / "data"
    run = {"check": True, "capture_output": True, "timeout": 60}
    subprocess.run(
        _as_owner(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
            user,
        ),
        **run,  # type: ignore[call-overload]
    )
    options = f"-k {root} -p {_PORT} -c listen_addresses='' -c fsync=off -c full_page_writes=off"
    subprocess.run(
        _as_owner(
            [
                str(bindir / "pg_ctl"),
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
        **run,  # type: ignore[call-overload]
    )

    def stop() -> None:
        subprocess.run(
            _as_owner([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], user),
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(root, ignore_errors=True)

    atexit.register(stop)
    return f"postgresql://postgres@/postgres?host={quote(str(root))}&port={_PORT}"


def server_url() -> str:
    """The server's URL; pytest.skip when there is none to be had."""
    if "url" not in _state:
        if os.environ.get(ENV_URL):
            _state["url"] = os.environ[ENV_URL]
        else:
            try:
                _state["url"] = _start_cluster()
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                detail = getattr(exc, "stderr", b"") or b""
                _state["error"] = f"{exc} {detail.decode(errors='replace')[-500:]}".strip()
                _state["url"] = ""
    if not _state["url"]:
        pytest.skip(f"PostgreSQL not available: {_state.get('error', 'unknown')}")
    return _state["url"]


@contextmanager
def fresh_schema() -> Iterator[str]:
    """A URL whose search_path is a new, empty schema; dropped afterwards."""
    import psycopg

    base = server_url()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options={quote(f'-csearch_path={schema}')}"
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
