"""`maas-registry`: serve the model registry, check its integrity (--check), or collect
blob garbage once (--gc)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from services.common.logs import configure_logging
from services.common.server import GrpcServer, run_service
from services.common.settings import add_server_flags
from services.common.telemetry import Telemetry
from services.registry.app import Registry
from services.registry.auth import AuthInterceptor, load_tokens, registry_policy
from services.registry.blobs import BlobStore, blob_store_for
from services.registry.gc import BlobCollector
from services.registry.integrity import check_integrity
from services.registry.metrics import RegistryMetrics
from services.registry.servicer import ModelRegistryServicer
from services.registry.settings import RegistrySettings
from services.registry.store import create_store

_log = logging.getLogger(__name__)


@dataclass
class RegistryServer:
    """The registry app and the gRPC server in front of it."""

    registry: Registry
    server: GrpcServer

    async def start(self) -> int:
        """Start serving; the bound port."""
        return await self.server.start()

    def request_shutdown(self) -> None:
        """End watch streams, then drain and stop (safe from a signal handler)."""
        self.registry.hub.end_subscriptions()
        self.server.request_shutdown()

    async def stop(self, grace: float | None = None) -> None:
        """Stop serving and close the registry."""
        self.registry.hub.end_subscriptions()
        await self.server.shutdown(grace)

    async def wait(self) -> None:
        """Block until stopped."""
        await self.server.wait()


async def create_server(settings: RegistrySettings) -> RegistryServer:
    """Open the registry and build its server (not started yet)."""
    interceptors = []
    if settings.no_auth:
        _log.warning("authentication is disabled (--no-auth): anyone can change the registry")
    else:
        tokens = load_tokens(settings)
        if not len(tokens):
            raise ValueError(
                "no tokens configured: set MAAS_REGISTRY_ADMIN_TOKEN (and optionally "
                "MAAS_REGISTRY_READER_TOKEN), pass --tokens-file, or pass --no-auth"
            )
        interceptors.append(AuthInterceptor(tokens, registry_policy))
    registry = await Registry.open(settings)
    telemetry = Telemetry.from_env("maas-registry")
    metrics_registry = CollectorRegistry()
    registry.observe(RegistryMetrics(metrics_registry), telemetry.tracing("maas.registry"))
    servicer = ModelRegistryServicer(registry)
    server = GrpcServer(
        settings,
        bindings=[servicer.binding()],
        interceptors=interceptors,
        on_shutdown=[registry.close],
        telemetry=telemetry,
        metrics_registry=metrics_registry,
        service="registry",
    )
    return RegistryServer(registry, server)


async def serve(settings: RegistrySettings) -> None:
    """Serve until SIGTERM or SIGINT."""
    running = await create_server(settings)
    port = await running.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, running.request_shutdown)
    _log.info(
        "serving",
        extra={
            "port": port,
            "data_dir": str(settings.data_dir),
            "database": running.registry.store.kind,
            "auth": not settings.no_auth,
        },
    )
    await running.wait()


def _blobs(settings: RegistrySettings) -> BlobStore:
    blobs = blob_store_for(
        settings.blob_url, settings.data_dir, endpoint_url=settings.s3_endpoint_url
    )
    blobs.check()
    return blobs


async def check(settings: RegistrySettings, *, verify_hashes: bool) -> int:
    """Print the integrity report as JSON; 0 when everything is consistent."""
    blobs = _blobs(settings)
    store = create_store(settings.database(), settings.data_dir, history=settings.watch_history)
    await store.open()
    try:
        report = await check_integrity(store, blobs, verify_hashes=verify_hashes)
    finally:
        await store.close()
    print(json.dumps({**asdict(report), "ok": report.ok}, indent=2))  # noqa: T201 - CLI output
    return 0 if report.ok else 1


async def collect_garbage(settings: RegistrySettings) -> int:
    """One garbage collection (under the blob lock, with the grace period); its report."""
    blobs = _blobs(settings)
    store = create_store(settings.database(), settings.data_dir, history=settings.watch_history)
    await store.open()
    lock = store.backend.blob_lock()
    try:
        collector = BlobCollector(store, blobs, lock, grace_seconds=settings.gc_grace_seconds)
        report = await collector.collect()
    finally:
        await lock.close()
        await store.close()
    print(json.dumps(asdict(report), indent=2))  # noqa: T201 - CLI output
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Flags mirror RegistrySettings; tokens come only from the environment or a file."""
    p = argparse.ArgumentParser(
        prog="maas-registry",
        description="The maas model registry. Every flag can also be set as "
        "MAAS_REGISTRY_<FLAG>; tokens only as MAAS_REGISTRY_ADMIN_TOKEN / "
        "MAAS_REGISTRY_READER_TOKEN or in --tokens-file, never on the command line.",
    )
    add_server_flags(p, port=8011, metrics_port=9011)
    p.add_argument("--data-dir", help="blobs and the SQLite database (default .data/registry)")
    p.add_argument("--database-url", help="postgresql://... or sqlite:///PATH")
    p.add_argument("--tokens-file", help="YAML file of admin/reader tokens")
    p.add_argument("--no-auth", action="store_true", default=None, help="serve without auth")
    p.add_argument("--max-model-bytes", type=int, help="largest upload (default 2 GiB)")
    p.add_argument("--opset-min", type=int, help="lowest allowed ai.onnx opset (default 7)")
    p.add_argument("--opset-max", type=int, help="highest allowed ai.onnx opset (default 23)")
    p.add_argument("--watch-history", type=int, help="events kept for Watch (default 10000)")
    p.add_argument("--watch-queue-size", type=int, help="events buffered per subscriber")
    p.add_argument("--blob-url", help="s3://bucket/prefix for an object store (default: files)")
    p.add_argument("--s3-endpoint-url", help="object store endpoint (else AWS_ENDPOINT_URL)")
    p.add_argument("--gc-grace-seconds", type=float, help="min age of collected blobs (3600)")
    p.add_argument("--gc-interval-seconds", type=float, help="GC period, 0: at start only")
    p.add_argument("--check", action="store_true", help="check integrity, print JSON, exit")
    p.add_argument("--verify-hashes", action="store_true", help="with --check: re-hash blobs")
    p.add_argument("--gc", action="store_true", help="collect blob garbage once, print JSON, exit")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `maas-registry` console script."""
    args = vars(build_parser().parse_args(argv))
    run_check, verify, run_gc = args.pop("check"), args.pop("verify_hashes"), args.pop("gc")
    try:
        settings = RegistrySettings.from_args(args)
    except ValidationError as exc:
        # Only locations and messages: the input values may hold secrets.
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors()
        )
        sys.exit(f"maas-registry: invalid settings: {problems}")
    configure_logging(settings.log_level, "registry")
    try:
        if run_check:
            sys.exit(asyncio.run(check(settings, verify_hashes=verify)))
        if run_gc:
            sys.exit(asyncio.run(collect_garbage(settings)))
    except ValueError as exc:
        sys.exit(f"maas-registry: {exc}")
    try:
        code = run_service("maas-registry", serve(settings), settings.event_loop)
    except (ValueError, OSError) as exc:
        sys.exit(f"maas-registry: {exc}")
    sys.exit(code)


if __name__ == "__main__":
    main()
