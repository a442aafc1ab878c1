"""`maas models`: register, list, alias, archive and download models in the registry."""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

from services.common.errors import ServiceError
from services.common.tls_client import ClientTLS, TLSFileError
from services.registry.client import RegistryClient
from services.registry.domain import Version, VersionState
from services.registry.transfer import plan_upload
from tools.cli import CliError
from tools.progress import ProgressBar

DEFAULT_REGISTRY = "localhost:8011"
_MIB = 1024 * 1024
T = TypeVar("T")


def upload_file(
    registry: str | None,
    token: str | None,
    name: str,
    path: Path | str,
    alias: str | None = None,
    config: str | Path | None = None,
    *,
    aliases: Sequence[str] = (),
    description: str = "",
    labels: dict[str, str] | None = None,
    progress: bool = False,
    tls: ClientTLS | None = None,
    files: dict[str, Path] | None = None,
) -> Version:
    """Upload an .onnx file (and its external data) as a new version of `name`.

    `registry` and `token` default to $MAAS_REGISTRY (else localhost:8011) and
    $MAAS_TOKEN. `config` is YAML text or a path to a YAML file. The first alias
    is set in the same transaction as the upload, any others right after.
    `files` attaches more files to the version (its path -> the local file), e.g. an
    explanation background, `background.npz`, beside model.onnx.
    Raises CliError with a one-line message on failure.
    """
    wanted = [a for a in [alias, *aliases] if a]
    config_text = _config_text(config)

    try:
        planned = plan_upload(Path(path))
        if files:
            for local in files.values():
                if not local.is_file():
                    raise CliError(f"--file {local}: no such file")
            found = {f.path: f.source for f in planned[1:]}
            planned = plan_upload(Path(path), {**found, **files})
    except ServiceError as exc:
        raise CliError(exc.message) from None
    total = sum(f.size_bytes for f in planned)

    async def run(client: RegistryClient) -> Version:
        bar = ProgressBar(total, f"upload {name}", enabled=progress or None)
        try:
            version = await client.upload_files(
                name,
                planned,
                alias=wanted[0] if wanted else "",
                config=config_text,
                description=description,
                labels=labels,
                progress=bar.update,
            )
        finally:
            bar.close()
        for extra in wanted[1:]:
            await client.set_alias(name, extra, version.version)
        return await client.get_version(name, version.version)

    return _run(registry, token, run, tls=tls)


def _config_text(config: str | Path | None) -> str:
    if config is None:
        return ""
    if isinstance(config, Path) or (isinstance(config, str) and "\n" not in config):
        candidate = Path(config)
        if candidate.is_file():
            return candidate.read_text()
        if isinstance(config, Path):
            raise CliError(f"config file {config} does not exist")
    return str(config)


def _run(
    registry: str | None,
    token: str | None,
    action: Callable[[RegistryClient], Awaitable[T]],
    *,
    tls: ClientTLS | None = None,
) -> T:
    address = registry or os.environ.get("MAAS_REGISTRY") or DEFAULT_REGISTRY
    secret = token if token is not None else os.environ.get("MAAS_TOKEN")
    tls = tls or client_tls()

    async def main() -> T:
        async with RegistryClient(address, secret, tls=tls) as client:
            return await action(client)

    try:
        return asyncio.run(main())
    except TLSFileError as exc:
        raise CliError(str(exc)) from None
    except ServiceError as exc:
        hint = " (pass --token or set MAAS_TOKEN)" if exc.status == "UNAUTHENTICATED" else ""
        raise CliError(f"{exc.status}: {exc.message}{hint}") from None
    except OSError as exc:
        raise CliError(str(exc)) from None


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `maas models` and its actions."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--registry",
        default=argparse.SUPPRESS,
        help=f"registry HOST:PORT (default $MAAS_REGISTRY or {DEFAULT_REGISTRY})",
    )
    common.add_argument(
        "--token", default=argparse.SUPPRESS, help="bearer token (default $MAAS_TOKEN)"
    )
    common.add_argument(
        "--ca", default=argparse.SUPPRESS, help="PEM CA bundle: TLS to the registry ($MAAS_CA)"
    )
    common.add_argument(
        "--cert", default=argparse.SUPPRESS, help="PEM client certificate ($MAAS_CERT)"
    )
    common.add_argument("--key", default=argparse.SUPPRESS, help="its PEM key ($MAAS_KEY)")
    common.add_argument(
        "--tls-server-name", default=argparse.SUPPRESS, help="name the registry's cert carries"
    )
    parser = subparsers.add_parser("models", parents=[common], help="manage models in the registry")
    actions = parser.add_subparsers(dest="models_command", required=True)

    p = actions.add_parser("register", parents=[common], help="upload a new version")
    p.add_argument("name", metavar="NAME")
    p.add_argument("file", metavar="FILE", type=Path, help=".onnx file (external data is found)")
    p.add_argument("--alias", action="append", default=[], help="point this alias at it")
    p.add_argument("--config", type=Path, help="serving config YAML (config.yaml format)")
    p.add_argument("--description", default="")
    p.add_argument("--label", action="append", default=[], metavar="K=V")
    p.add_argument(
        "--file",
        action="append",
        default=[],
        dest="file_",
        metavar="[PATH=]LOCAL",
        help="another file of the version, at PATH (default: its name), e.g. background.npz",
    )
    p.set_defaults(func=_register)

    p = actions.add_parser("list", parents=[common], help="list models")
    p.add_argument("--prefix", default="", help="only names starting with this")
    p.set_defaults(func=_list)

    p = actions.add_parser("versions", parents=[common], help="list a model's versions")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--active", action="store_true", help="only ACTIVE versions")
    p.set_defaults(func=_versions)

    p = actions.add_parser("alias", parents=[common], help="point an alias at a version")
    p.add_argument("name", metavar="NAME")
    p.add_argument("alias", metavar="ALIAS")
    p.add_argument("version", metavar="VERSION", type=int)
    p.set_defaults(func=_alias)

    p = actions.add_parser("archive", parents=[common], help="archive a version")
    p.add_argument("name", metavar="NAME")
    p.add_argument("version", metavar="VERSION", type=int)
    p.set_defaults(func=_archive)

    p = actions.add_parser("download", parents=[common], help="download a version's files")
    p.add_argument("name", metavar="NAME")
    p.add_argument("version", metavar="VERSION", help="number, alias or 'latest'")
    p.add_argument("-o", "--output", type=Path, default=Path("."), metavar="DIR")
    p.set_defaults(func=_download)


def _conn(args: argparse.Namespace) -> tuple[str | None, str | None]:
    return getattr(args, "registry", None), getattr(args, "token", None)


def client_tls(args: argparse.Namespace | None = None) -> ClientTLS | None:
    """TLS to the registry from --ca/--cert/--key/--tls-server-name, else $MAAS_CA etc."""

    def pick(flag: str, env: str) -> str | None:
        value = getattr(args, flag, None) if args is not None else None
        return value if value is not None else os.environ.get(env)

    try:
        return ClientTLS.from_settings(
            pick("ca", "MAAS_CA"),
            pick("cert", "MAAS_CERT"),
            pick("key", "MAAS_KEY"),
            pick("tls_server_name", "MAAS_TLS_SERVER_NAME"),
        )
    except TLSFileError as exc:
        raise CliError(str(exc)) from None


def _register(args: argparse.Namespace) -> int:
    labels = {}
    for item in args.label:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"--label expects KEY=VALUE, got {item!r}")
        labels[key] = value
    attached = {}
    for item in args.file_:
        target, sep, local = item.partition("=")
        if not sep:
            target, local = Path(item).name, item
        attached[target] = Path(local)
    version = upload_file(
        *_conn(args),
        args.name,
        args.file,
        config=args.config,
        aliases=args.alias,
        description=args.description,
        labels=labels,
        tls=client_tls(args),
        files=attached,
    )
    print(
        f"registered {version.model} version {version.version} "
        f"(sha256 {version.sha256[:12]}, {len(version.files)} file(s), "
        f"{_size(version.total_size_bytes)})"
    )
    for alias in version.aliases:
        print(f"{version.model}: {alias} -> {version.version}")
    return 0


def _list(args: argparse.Namespace) -> int:
    page = _run(
        *_conn(args), lambda c: c.list_models(name_prefix=args.prefix), tls=client_tls(args)
    )
    rows = [
        [
            m.name,
            str(m.latest_version or "-"),
            ",".join(f"{a}={v}" for a, v in m.aliases.items()) or "-",
            m.description,
        ]
        for m in page.items
    ]
    _table(["NAME", "LATEST", "ALIASES", "DESCRIPTION"], rows)
    return 0


def _versions(args: argparse.Namespace) -> int:
    state = VersionState.ACTIVE if args.active else None
    page = _run(
        *_conn(args), lambda c: c.list_versions(args.name, state=state), tls=client_tls(args)
    )
    rows = [
        [
            str(v.version),
            v.state.value,
            _size(v.total_size_bytes),
            v.sha256[:12],
            ",".join(v.aliases) or "-",
            v.create_time.strftime("%Y-%m-%d %H:%M:%S"),
        ]
        for v in page.items
    ]
    _table(["VERSION", "STATE", "SIZE", "SHA256", "ALIASES", "CREATED"], rows)
    return 0


def _alias(args: argparse.Namespace) -> int:
    change = _run(
        *_conn(args),
        lambda c: c.set_alias(args.name, args.alias, args.version),
        tls=client_tls(args),
    )
    was = f" (was {change.previous_version})" if change.previous_version else ""
    print(f"{args.name}: {args.alias} -> {change.alias.version}{was}")
    return 0


def _archive(args: argparse.Namespace) -> int:
    version = _run(
        *_conn(args), lambda c: c.archive_version(args.name, args.version), tls=client_tls(args)
    )
    print(f"{version.model} version {version.version} is {version.state.value}")
    return 0


def _download(args: argparse.Namespace) -> int:
    async def run(client: RegistryClient) -> Version:
        meta = await client.resolve(args.name, args.version)
        bar = ProgressBar(meta.total_size_bytes, f"download {args.name}")
        try:
            return await client.download(args.name, meta.version, args.output, progress=bar.update)
        finally:
            bar.close()

    version = _run(*_conn(args), run, tls=client_tls(args))
    files = ", ".join(f.path for f in version.files)
    print(f"downloaded {version.model} version {version.version} to {args.output} ({files})")
    return 0


def _size(count: int) -> str:
    if count >= _MIB:
        return f"{count / _MIB:.1f} MiB"
    return f"{count / 1024:.1f} KiB" if count >= 1024 else f"{count} B"


def _table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
