"""`maas up --tls`'s files and flags (tools.certs, tools.up_plan): who serves what,
certs reused and renewed, and the banner's plaintext warning without --tls."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

from cryptography import x509

from tools.certs import RENEW_DAYS, issue, make_ca
from tools.up_plan import TlsFiles, tls_args, tls_banner


def _sans(path: Path) -> list[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(n.value) for n in names]


def test_files_are_made_once_and_private(tmp_path: Path) -> None:
    tls = TlsFiles.ensure(tmp_path)
    assert set(tls.certs) == {"registry", "inference", "gateway", "cli"}
    cert, key = tls.certs["gateway"]
    assert _sans(cert) == ["localhost", "127.0.0.1", "::1"]
    for path in tmp_path.glob("*.key"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    TlsFiles.ensure(tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # reused


def test_a_cert_near_expiry_is_renewed(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    short = issue(ca, tmp_path, "inference", days=RENEW_DAYS - 1)
    old = short.cert.read_bytes()
    TlsFiles.ensure(tmp_path)
    renewed = x509.load_pem_x509_certificate(short.cert.read_bytes())
    assert short.cert.read_bytes() != old
    left = renewed.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert left > dt.timedelta(days=RENEW_DAYS)


def test_a_new_ca_reissues_the_certs(tmp_path: Path) -> None:
    first = TlsFiles.ensure(tmp_path)
    old = first.certs["registry"][0].read_bytes()
    for path in (tmp_path / "ca.pem", tmp_path / "ca.key"):
        path.unlink()
    TlsFiles.ensure(tmp_path)
    assert first.certs["registry"][0].read_bytes() != old  # chains to the new CA


def test_mutual_tls_between_services_but_not_at_the_gateway(tmp_path: Path) -> None:
    tls = TlsFiles.ensure(tmp_path)
    registry, inference, gateway = (tls_args(s, tls) for s in ("registry", "inference", "gateway"))
    assert "--tls-client-ca" in registry and "--tls-client-ca" in inference
    assert "--tls-client-ca" not in gateway and "--tls-cert" in gateway
    for flags in (inference, gateway):
        assert "--tls-ca" in flags and "--tls-client-cert" in flags
    assert "--tls-ca" not in registry  # it calls no one
    assert tls_args("gateway", None) == []


def test_banner_says_plaintext_without_tls(tmp_path: Path) -> None:
    off = tls_banner(None)
    assert "TLS: OFF (plaintext)" in off.lines[0] and off.grpcurl == "-plaintext"
    on = tls_banner(TlsFiles.ensure(tmp_path))
    assert on.lines[0].endswith(str(tmp_path / "ca.pem"))
    assert on.tritonclient == f', ssl=True, root_certificates="{tmp_path / "ca.pem"}"'
