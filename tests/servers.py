"""Services under test as real processes: `--port 0`, bound port read from --port-file."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tools.processes import ServiceProcess as _ServiceProcess

ROOT = Path(__file__).resolve().parents[1]


class ServiceProcess(_ServiceProcess):
    """A maas service started in `workdir` and serving when the constructor returns."""

    def __init__(
        self, service: str, args: list[str], workdir: Path, env: dict[str, str] | None = None
    ) -> None:
        stamp = time.monotonic_ns()
        super().__init__(
            service,
            args,
            log_path=workdir / f"{service}-{stamp}.log",
            port_file=workdir / f"{service}-{stamp}.port",
            env=env,
            cwd=ROOT,
        )
        self.wait_for_port()

    def stop(self, timeout: float = 20.0) -> None:
        super().stop(timeout)


@contextmanager
def keyed_gateway(
    workdir: Path,
    repository: Path,
    keys_yaml: str,
    *,
    inference_args: Sequence[str] = (),
    gateway_args: Sequence[str] = (),
) -> Iterator[ServiceProcess]:
    """An inference service over `repository` and, in front of it, a gateway whose API
    keys file holds `keys_yaml`; both stopped on exit, the gateway first."""
    keys = workdir / "keys.yaml"
    keys.write_text(keys_yaml)
    backend = ServiceProcess(
        "inference", ["--model-repository", str(repository), *inference_args], workdir
    )
    try:
        gateway = ServiceProcess(
            "gateway",
            [
                "--backends",
                backend.address,
                "--api-keys-file",
                str(keys),
                "--grace-seconds",
                "1",
                *gateway_args,
            ],
            workdir,
        )
        try:
            yield gateway
        finally:
            gateway.stop()
    finally:
        backend.stop()


def hashed_key(key_id: str, key: str) -> str:
    """One entry of a keys file: the key stored as its SHA-256, never in the clear."""
    return f"  - {{id: {key_id}, sha256: {hashlib.sha256(key.encode()).hexdigest()}}}\n"
