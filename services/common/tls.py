"""TLS from PEM files that may be replaced while a service runs.

Server side: `ServerTls` reads --tls-cert/--tls-key (and --tls-client-ca for mutual
TLS), checks they belong together before anything binds (a clear startup error
rather than every handshake failing), and hands out gRPC credentials and an
ssl.SSLContext that re-read the files when their size or mtime changes. A stat
per handshake is all a rotation costs; connections already open keep the
certificate they were made with. A half-written or mismatched replacement is
refused (logged, rate-limited) and the last good certificate kept.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from services.common.ratelog import Throttled

if TYPE_CHECKING:
    from services.common.settings import ServiceSettings

_log = logging.getLogger(__name__)


class TlsError(ValueError):
    """A TLS setting that cannot be served; names the flag and variable, never contents."""

    def __init__(self, setting: str, problem: str, settings: ServiceSettings) -> None:
        prefix = type(settings).model_config.get("env_prefix", "")
        self.flag = "--" + setting.replace("_", "-")
        self.env = f"{prefix}{setting.upper()}"
        self.problem = problem
        super().__init__(f"{self.flag} ({self.env}): {problem}")


@dataclass(frozen=True)
class _Pem:
    """One consistent reading of the files: certificate chain, key, client CA."""

    chain: bytes
    key: bytes
    client_ca: bytes | None
    serial: int


class _LoggedHandshake(ssl.SSLObject):
    """The server end of one TLS connection, logging why a handshake was refused.

    asyncio (and uvloop) stay silent about failed handshakes unless in debug mode; the
    reason is OpenSSL's (HTTP_REQUEST, PEER_DID_NOT_RETURN_A_CERTIFICATE, ...), never
    key material. Refusals are the clients' doing, so as many as they like: the
    listener's subclass sets a Throttled.
    """

    refused: Throttled

    def do_handshake(self) -> None:
        try:
            super().do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except ssl.SSLError as exc:
            self.refused.warning("TLS handshake refused: %s", exc.reason or "unknown")
            raise


def _stamp(path: str) -> tuple[int, int, int]:
    st = os.stat(path)
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class ServerTls:
    """The server certificate files of one service, re-read when they change."""

    def __init__(self, settings: ServiceSettings) -> None:
        if not settings.tls_cert or not settings.tls_key:
            missing = "tls_key" if settings.tls_cert else "tls_cert"
            raise TlsError(missing, "needed with the other of --tls-cert/--tls-key", settings)
        self._settings = settings
        self._paths = {
            "tls_cert": settings.tls_cert,
            "tls_key": settings.tls_key,
            **({"tls_client_ca": settings.tls_client_ca} if settings.tls_client_ca else {}),
        }
        self._lock = threading.Lock()
        self._refused = Throttled(_log, interval=30.0)
        self._stamps = self._stat()
        self._pem = self._read()  # raises TlsError: a bad start is an error, not a warning
        self._context = self._ssl_context(self._pem)

    @property
    def mutual(self) -> bool:
        """Whether clients must present a certificate signed by --tls-client-ca."""
        return self._pem.client_ca is not None

    @property
    def serial(self) -> int:
        """The serial number of the certificate now served."""
        return self._pem.serial

    def _stat(self) -> dict[str, tuple[int, int, int]]:
        stamps = {}
        for setting, path in self._paths.items():
            try:
                stamps[setting] = _stamp(path)
            except OSError as exc:
                raise TlsError(setting, f"cannot read it: {exc.strerror}", self._settings) from None
        return stamps

    def _read(self) -> _Pem:
        """Read and check the files; TlsError naming the setting at fault."""
        data: dict[str, bytes] = {}
        for setting, path in self._paths.items():
            try:
                with open(path, "rb") as f:
                    data[setting] = f.read()
            except OSError as exc:
                raise TlsError(setting, f"cannot read it: {exc.strerror}", self._settings) from None
        try:
            certs = x509.load_pem_x509_certificates(data["tls_cert"])
        except ValueError:
            raise TlsError("tls_cert", "not a PEM certificate", self._settings) from None
        try:
            key = serialization.load_pem_private_key(data["tls_key"], password=None)
        except (ValueError, TypeError):
            raise TlsError(
                "tls_key", "not an unencrypted PEM private key", self._settings
            ) from None
        spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        if certs[0].public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
            raise TlsError(
                "tls_key", "does not match the certificate of --tls-cert", self._settings
            )
        ca = data.get("tls_client_ca")
        if ca is not None:
            try:
                x509.load_pem_x509_certificates(ca)
            except ValueError:
                raise TlsError("tls_client_ca", "not PEM certificates", self._settings) from None
        return _Pem(data["tls_cert"], data["tls_key"], ca, certs[0].serial_number)

    def _ssl_context(self, pem: _Pem) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        # The files checked above; a swap between the check and this load raises here.
        ctx.load_cert_chain(self._paths["tls_cert"], self._paths["tls_key"])
        if pem.client_ca is not None:
            ctx.load_verify_locations(cadata=pem.client_ca.decode("ascii", "replace"))
            ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

    def refresh(self) -> bool:
        """Re-read the files if any changed since last read; whether a new one is served.

        Called from every handshake (grpc core's thread or the event loop), so a
        change is a stat away; a bad replacement keeps the last good one.
        """
        with self._lock:
            try:
                stamps = self._stat()
            except TlsError as exc:
                self._refused.warning("TLS files not reloaded: %s", exc)
                return False
            if stamps == self._stamps:
                return False
            try:
                pem = self._read()
                context = self._ssl_context(pem)
            except (TlsError, ssl.SSLError, OSError) as exc:
                # Left unrecorded, so the next handshake tries again (a copy half-done).
                self._refused.warning("TLS files not reloaded, serving the last good: %s", exc)
                return False
            self._stamps, self._pem, self._context = stamps, pem, context
        _log.info("TLS certificate reloaded (serial %x)", pem.serial)
        return True

    # gRPC

    def _grpc_configuration(self) -> grpc.ServerCertificateConfiguration:
        pem = self._pem
        return grpc.ssl_server_certificate_configuration(
            [(pem.key, pem.chain)], root_certificates=pem.client_ca
        )

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        # grpc core asks at each handshake; None keeps what it has.
        return self._grpc_configuration() if self.refresh() else None

    def grpc_credentials(self) -> grpc.ServerCredentials:
        """Credentials for add_secure_port that follow the files."""
        return grpc.dynamic_ssl_server_credentials(
            self._grpc_configuration(), self._fetch, require_client_authentication=self.mutual
        )

    # HTTP (ssl module)

    def ssl_context(self) -> ssl.SSLContext:
        """A server context whose handshakes switch to the files' latest certificate."""
        base = self._ssl_context(self._pem)

        def pick(sock: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
            self.refresh()
            if sock.context is not self._context:
                sock.context = self._context

        base.sni_callback = pick
        base.sslobject_class = type(
            "Handshake", (_LoggedHandshake,), {"refused": Throttled(_log, interval=10.0)}
        )
        return base
