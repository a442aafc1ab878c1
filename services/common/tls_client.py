"""TLS on the client side of internal channels: credentials from files, and rotation.

grpcio channels cannot reload their certificates, so a `ChannelSource` keeps one
channel and, when the CA or client cert/key files change (checked with a cheap
stat at most every `check_seconds`, on the next call), builds a new channel and
closes the old one with a grace, so calls already in flight on it still finish.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import grpc
from pydantic import Field, model_validator

from services.common.settings import ServiceSettings

_log = logging.getLogger(__name__)
# How long an old channel keeps serving the calls it has after a rotation.
DEFAULT_GRACE_SECONDS = 30.0
# The least time between two stats of the watched files.
DEFAULT_CHECK_SECONDS = 1.0


class TLSFileError(ValueError):
    """A CA bundle, client certificate or key cannot be read or is not PEM."""


@dataclass(frozen=True)
class ClientTLS:
    """Files a client verifies the server with (and presents, for mutual TLS)."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    # The name the server's certificate is checked against, when not the address's host.
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise TLSFileError(
                "a client certificate needs its key (and a key its certificate): "
                f"got cert={'set' if self.cert else 'unset'}, key={'set' if self.key else 'unset'}"
            )

    @classmethod
    def from_settings(
        cls,
        ca: str | None,
        cert: str | None = None,
        key: str | None = None,
        server_name: str | None = None,
    ) -> ClientTLS | None:
        """TLS when any of the files is given, else None (a plaintext channel)."""
        if ca is None and cert is None and key is None:
            return None
        return cls(ca, cert, key, server_name)

    def files(self) -> tuple[str, ...]:
        """The files whose change makes a new channel."""
        return tuple(f for f in (self.ca, self.cert, self.key) if f)

    def credentials(self) -> grpc.ChannelCredentials:
        """Channel credentials read from the files now (no CA: the system's roots)."""
        return grpc.ssl_channel_credentials(
            root_certificates=_read_pem(self.ca, "CA bundle", b"CERTIFICATE"),
            private_key=_read_pem(self.key, "client key", b"PRIVATE KEY"),
            certificate_chain=_read_pem(self.cert, "client certificate", b"CERTIFICATE"),
        )

    def options(self) -> list[tuple[str, Any]]:
        """Channel options: the server-name override, when set."""
        if self.server_name:
            return [("grpc.ssl_target_name_override", self.server_name)]
        return []


def _read_pem(path: str | None, what: str, marker: bytes) -> bytes | None:
    if path is None:
        return None
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise TLSFileError(f"{what} {path}: cannot be read ({exc.strerror})") from None
    if b"-----BEGIN " not in data or marker not in data:
        raise TLSFileError(f"{what} {path}: expected PEM ({marker.decode()}), got something else")
    return data


def secure_or_insecure_channel(
    address: str,
    tls: ClientTLS | None,
    options: Sequence[tuple[str, Any]] = (),
    interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
) -> grpc.aio.Channel:
    """A TLS channel when `tls` is set, else a plaintext one."""
    if tls is None:
        return grpc.aio.insecure_channel(
            address, options=list(options), interceptors=list(interceptors) or None
        )
    return grpc.aio.secure_channel(
        address,
        tls.credentials(),
        options=[*options, *tls.options()],
        interceptors=list(interceptors) or None,
    )


class FileWatch:
    """Tells when any of some files changed (size, mtime, inode), by stat, rate-limited."""

    def __init__(self, paths: Sequence[str], check_seconds: float = DEFAULT_CHECK_SECONDS) -> None:
        self._paths = tuple(paths)
        self._check_seconds = check_seconds
        self._next_check = time.monotonic() + check_seconds
        self._stamps = self._read()

    def _read(self) -> tuple[tuple[int, int, int] | None, ...]:
        stamps: list[tuple[int, int, int] | None] = []
        for path in self._paths:
            try:
                st = os.stat(path)
            except OSError:
                stamps.append(None)
            else:
                stamps.append((st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(stamps)

    def changed(self) -> bool:
        """True once per change; cheap (no stat) between checks."""
        now = time.monotonic()
        if not self._paths or now < self._next_check:
            return False
        self._next_check = now + self._check_seconds
        stamps = self._read()
        if stamps == self._stamps:
            return False
        self._stamps = stamps
        return True


class ChannelSource:
    """One address's current channel, rebuilt when its TLS files change."""

    def __init__(
        self,
        address: str,
        tls: ClientTLS | None,
        *,
        options: Sequence[tuple[str, Any]] = (),
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
        grace_seconds: float = DEFAULT_GRACE_SECONDS,
        check_seconds: float = DEFAULT_CHECK_SECONDS,
    ) -> None:
        self.address = address
        self.tls = tls
        self._options = tuple(options)
        self._interceptors = tuple(interceptors)
        self._grace = grace_seconds
        self._watch = FileWatch(tls.files() if tls else (), check_seconds)
        self._channel = self._build()
        # Old channels finishing their calls, by the task that closes each after the grace.
        self._closing: dict[asyncio.Task[None], grpc.aio.Channel] = {}
        # Bumped on every rebuild so owners can drop stubs made on an old channel.
        self.generation = 0

    def _build(self) -> grpc.aio.Channel:
        return secure_or_insecure_channel(self.address, self.tls, self._options, self._interceptors)

    def current(self) -> grpc.aio.Channel:
        """The channel to start a call on; a new one if the files changed since."""
        if self._watch.changed():
            try:
                fresh = self._build()
            except TLSFileError as exc:
                # A half-written rotation: keep the old channel and try at the next change.
                _log.warning("tls: keeping the old channel", extra={"reason": str(exc)})
                return self._channel
            old, self._channel = self._channel, fresh
            self.generation += 1
            _log.info("tls: files changed, new channel", extra={"address": self.address})
            task = asyncio.get_running_loop().create_task(old.close(self._grace))
            self._closing[task] = old
            task.add_done_callback(lambda done: self._closing.pop(done, None))
        return self._channel

    async def close(self, grace: float | None = None) -> None:
        """Close the current channel and any old one still finishing its calls."""
        old = list(self._closing.items())
        for task, _ in old:
            task.cancel()
        await asyncio.gather(
            self._channel.close(grace),
            *(channel.close(grace) for _, channel in old),
            *(task for task, _ in old),
            return_exceptions=True,
        )


def add_client_flags(parser: argparse.ArgumentParser, target: str) -> None:
    """--tls-ca, --tls-client-cert, --tls-client-key, --tls-server-name for calls to `target`."""
    parser.add_argument("--tls-ca", help=f"PEM CA bundle: call {target} over TLS, verified by it")
    parser.add_argument("--tls-client-cert", help=f"PEM client certificate shown to {target}")
    parser.add_argument("--tls-client-key", help="PEM private key of --tls-client-cert")
    parser.add_argument("--tls-server-name", help=f"name {target} certificates are checked against")


class CallerSettings(ServiceSettings):
    """ServiceSettings of a service that calls others (the gateway calls the registry
    and inference, inference the registry): the TLS of those calls."""

    tls_ca: str | None = Field(
        None,
        description="PEM CA bundle to verify the services this one calls; set (or a client "
        "cert): calls go over TLS.",
    )
    tls_client_cert: str | None = Field(
        None,
        description="PEM client certificate shown to the services this one calls (mutual "
        "TLS); with tls_client_key.",
    )
    tls_client_key: str | None = Field(None, description="PEM private key of tls_client_cert.")
    tls_server_name: str | None = Field(
        None,
        description="The name the called services are checked against in their "
        "certificates, when not the host dialled.",
    )

    @model_validator(mode="after")
    def _client_pair(self) -> Self:
        self.client_tls()  # a cert without its key (or a key alone) is named here
        return self

    def client_tls(self) -> ClientTLS | None:
        """TLS for the calls this service makes (rebuilt as files change), or None."""
        return ClientTLS.from_settings(
            self.tls_ca, self.tls_client_cert, self.tls_client_key, self.tls_server_name
        )
