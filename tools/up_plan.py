"""What `maas up` starts: the secrets `--auth` makes, and each service's flags and
environment. Pure functions, so the choices (loopback, which credential goes where)
are testable without starting anything.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

import yaml

SERVICES = ("registry", "inference", "gateway")
# Where the internal services listen (their metrics too); the gateway takes the default.
# The demo model every `maas up` registers (tools/digits).
DEMO_MODEL = "digits"
LOOPBACK = "127.0.0.1"


def _generate() -> str:
    return secrets.token_urlsafe(24)


@dataclass
class Secrets:
    """What `--auth` generates; shown once, stored only as sha256 digests.

    With `--api-keys-file` the gateway's keys are that file's, and no key is made.
    The service token is handed to the gateway in its environment, never shown.
    """

    admin_token: str = field(default_factory=_generate)
    reader_token: str = field(default_factory=_generate)
    api_key: str | None = field(default_factory=_generate)
    service_token: str = field(default_factory=_generate, repr=False)
    api_keys_file: str | None = None

    @classmethod
    def generate(cls, api_keys_file: str | None) -> Secrets:
        """Fresh secrets; an API key only when no keys file is given."""
        if api_keys_file:
            return cls(api_key=None, api_keys_file=str(Path(api_keys_file).resolve()))
        return cls()

    def write(self, folder: Path) -> SecretFiles:
        """The registry's tokens, inference's service tokens and the gateway's keys, hashed."""
        from services.common.tokens import hash_token

        folder.mkdir(parents=True, exist_ok=True)
        tokens = folder / "registry-tokens.yaml"
        service = folder / "inference-tokens.yaml"
        service.write_text(
            yaml.safe_dump(
                {"tokens": [{"id": "gateway", "sha256": hash_token(self.service_token)}]}
            )
        )
        tokens.write_text(
            yaml.safe_dump(
                {
                    "tokens": [
                        {"id": "admin", "role": "admin", "sha256": hash_token(self.admin_token)},
                        {
                            "id": "services",
                            "role": "reader",
                            "sha256": hash_token(self.reader_token),
                        },
                    ]
                }
            )
        )
        if self.api_key is None:
            assert self.api_keys_file is not None
            return SecretFiles(tokens, Path(self.api_keys_file), service)
        keys = folder / "gateway-keys.yaml"
        keys.write_text(
            yaml.safe_dump({"keys": [{"id": "local", "sha256": hash_token(self.api_key)}]})
        )
        return SecretFiles(tokens, keys, service)


@dataclass(frozen=True)
class SecretFiles:
    """Where each service reads its hashed credentials."""

    registry_tokens: Path
    gateway_keys: Path
    service_tokens: Path


def registry_args(data: Path, files: SecretFiles | None) -> list[str]:
    """The registry's flags: its data folder, loopback, and its tokens (or --no-auth)."""
    auth = ["--tokens-file", str(files.registry_tokens)] if files else ["--no-auth"]
    return ["--host", LOOPBACK, "--data-dir", str(data / "registry"), *auth]


def inference_args(registry: str, cache: Path, files: SecretFiles | None) -> list[str]:
    """An inference replica's flags: loopback, the registry it follows, its service tokens."""
    auth = ["--service-tokens-file", str(files.service_tokens)] if files else []
    return ["--host", LOOPBACK, "--registry", registry, "--cache-dir", str(cache), *auth]


def gateway_args(registry: str, backends: list[str], files: SecretFiles | None) -> list[str]:
    """The gateway's flags: the registry, the backends, and its keys (or --no-auth)."""
    auth = ["--api-keys-file", str(files.gateway_keys)] if files else ["--no-auth"]
    return ["--registry", registry, "--backends", ",".join(backends), *auth]


def secret_env(creds: Secrets | None) -> dict[str, dict[str, str]]:
    """The secrets each service gets in its environment (never on its command line)."""
    if creds is None:
        return {service: {} for service in SERVICES}
    return {
        "registry": {},
        "inference": {"MAAS_INFERENCE_REGISTRY_TOKEN": creds.reader_token},
        "gateway": {
            "MAAS_GATEWAY_REGISTRY_TOKEN": creds.reader_token,
            "MAAS_GATEWAY_BACKEND_TOKEN": creds.service_token,
        },
    }


@dataclass(frozen=True)
class TlsFiles:
    """What `--tls` makes under the data folder: the local CA and one cert per party.

    Every cert names localhost, 127.0.0.1 and ::1 and serves as both server and client
    cert; `cli` is the one `maas up` and the maas CLI show the registry.
    """

    ca: Path
    certs: dict[str, tuple[Path, Path]]

    @classmethod
    def ensure(cls, folder: Path) -> TlsFiles:
        """The CA and certs in `folder`, reused while fresh, renewed near expiry."""
        from tools.certs import issue, make_ca

        ca = make_ca(folder)
        certs = {}
        for name in (*SERVICES, "cli"):
            made = issue(ca, folder, name)
            certs[name] = (made.cert, made.key)
        return cls(ca.cert, certs)

    def client_flags(self, name: str) -> list[str]:
        """A service's flags to call the others with mutual TLS."""
        cert, key = self.certs[name]
        return [
            "--tls-ca",
            str(self.ca),
            "--tls-client-cert",
            str(cert),
            "--tls-client-key",
            str(key),
        ]

    def server_flags(self, name: str, *, require_client_certs: bool) -> list[str]:
        """A service's flags to serve TLS (and ask for certs the local CA signed)."""
        cert, key = self.certs[name]
        flags = ["--tls-cert", str(cert), "--tls-key", str(key)]
        return [*flags, "--tls-client-ca", str(self.ca)] if require_client_certs else flags


def tls_args(service: str, tls: TlsFiles | None) -> list[str]:
    """A service's TLS flags: registry and inference serve mutual TLS (certs the local CA
    signed); the gateway serves TLS to anyone (its callers show API keys, not certs);
    gateway and inference call the others with their own certs."""
    if tls is None:
        return []
    if service == "registry":
        return tls.server_flags("registry", require_client_certs=True)
    if service == "inference":
        serve = tls.server_flags("inference", require_client_certs=True)
        return [*serve, *tls.client_flags("inference")]
    return [*tls.server_flags("gateway", require_client_certs=False), *tls.client_flags("gateway")]


@dataclass(frozen=True)
class TlsBanner:
    """What the banner says of TLS, and the flags each printed command gets."""

    lines: list[str]
    grpcurl: str
    tritonclient: str
    curl: str
    maas_infer: str
    maas_models: str


def tls_banner(tls: TlsFiles | None) -> TlsBanner:
    """The banner's TLS lines; without TLS it says calls go in plaintext."""
    if tls is None:
        lines = [
            "  TLS: OFF (plaintext). Calls, keys and tokens cross the network readable; "
            "`maas up --tls`",
            "        serves TLS (and mutual TLS between the services).",
        ]
        return TlsBanner(lines, "-plaintext", "", "", "", "")
    cert, key = tls.certs["cli"]
    lines = [
        f"  TLS: ON.  CA: {tls.ca}",
        "             the gateway serves TLS to anyone; registry and inference also want a client",
        f"             cert the CA signed (the maas CLI's: --cert {cert} --key {key}).",
    ]
    return TlsBanner(
        lines,
        grpcurl=f"-cacert {tls.ca}",
        tritonclient=f', ssl=True, root_certificates="{tls.ca}"',
        curl=f"--cacert {tls.ca} ",
        maas_infer=f" --ca {tls.ca}",
        maas_models=f" --ca {tls.ca} --cert {cert} --key {key}",
    )
