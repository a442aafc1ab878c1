"""`maas-inference`: the inference service's entry point and wiring."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from maas_proto.explain.v1 import explain_pb2_grpc
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from prometheus_client import CollectorRegistry

from services.common.logs import configure_logging
from services.common.server import (
    NOT_SERVING,
    SERVING,
    GrpcServer,
    ServiceBinding,
    run_service,
)
from services.common.service_token import ServiceTokenInterceptor, load_service_tokens
from services.common.settings import add_server_flags, add_workers_flag
from services.common.telemetry import Telemetry
from services.common.tls_client import add_client_flags
from services.common.workers import SharedPort, Supervisor, run_supervisor
from services.common.workers_metrics import ReadyModels
from services.common.workers_role import WorkerRole
from services.inference.app import InferenceApp
from services.inference.explain.service import Explainer
from services.inference.explain_servicer import SERVICE_NAME as EXPLAIN_SERVICE
from services.inference.explain_servicer import ExplainServicer
from services.inference.manager import ModelManager
from services.inference.metrics import InferenceMetrics
from services.inference.mux_servicer import ForwardServicer, forward_binding
from services.inference.registry_plan import Selection
from services.inference.registry_source import RegistrySource
from services.inference.repository import DirectorySource
from services.inference.servicer import InferenceServicer
from services.inference.servicer import add_to_server as add_inference_servicer
from services.inference.settings import InferenceSettings
from services.inference.validate import TensorLimits
from services.registry.client import RegistryClient

_log = logging.getLogger(__name__)
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name


class InferenceServer:
    """The inference service: models loaded, then the gRPC server started."""

    def __init__(self, settings: InferenceSettings) -> None:
        self.settings = settings
        self.telemetry = Telemetry.from_env("maas-inference")
        self.metrics_registry = CollectorRegistry()
        self.metrics = InferenceMetrics(self.metrics_registry)
        self.manager = ModelManager(
            on_ready_change=self._model_health,
            metrics=self.metrics,
            tracing=self.telemetry.tracing("maas.inference"),
        )
        self.metrics.track(self.metrics_registry, self.manager.loaded)
        source = None
        if settings.model_repository:
            source = DirectorySource(
                Path(settings.model_repository), self.manager, require_cuda=settings.require_cuda
            )
        self.follower: RegistrySource | None = None
        if settings.registry:
            address, token = settings.registry, settings.registry_token
            tracing, tls = self.telemetry.client_interceptors(), settings.client_tls()
            self.follower = RegistrySource(
                lambda: RegistryClient(address, token, interceptors=tracing, tls=tls),
                self.manager,
                Path(settings.cache_dir),
                Selection.parse(settings.models),
                require_cuda=settings.require_cuda,
                retry_seconds=settings.load_retry_seconds,
                max_retry_seconds=settings.load_retry_max_seconds,
            )
        limits = TensorLimits(settings.max_tensor_elements, settings.max_bytes_elements)
        self.app = InferenceApp(self.manager, source, self.metrics, limits)
        servicer = InferenceServicer(self.app, self.telemetry.tracing("maas.inference"))
        explainer = ExplainServicer(Explainer(self.app, settings.explain_max_evaluations))
        # The gateway's calls multiplexed on streams, run as ModelInfer runs them.
        self.forward = ForwardServicer(servicer, max_message_bytes=settings.max_message_bytes)
        secret = settings.service_token
        tokens = load_service_tokens(
            settings.service_tokens_file, secret.get_secret_value() if secret else None
        )
        if not tokens:
            _log.warning("no service token configured: anyone who reaches this port may call it")
        self.grpc = GrpcServer(
            settings,
            [
                ServiceBinding(
                    SERVICE_NAME,
                    lambda s: add_inference_servicer(servicer, s),
                ),
                forward_binding(self.forward),
                ServiceBinding(
                    EXPLAIN_SERVICE,
                    lambda s: explain_pb2_grpc.add_ExplainerServicer_to_server(explainer, s),
                ),
            ],
            interceptors=[ServiceTokenInterceptor(tokens)] if tokens else [],
            on_drain=[self._drain, self.forward.drain],
            on_shutdown=[self._stop_following, self.manager.unload_all],
            telemetry=self.telemetry,
            metrics_registry=self.metrics_registry,
            service="inference",
        )

    async def _stop_following(self) -> None:
        if self.follower is not None:
            await self.follower.stop()

    def _drain(self) -> None:
        self.app.draining = True

    async def _model_health(self, name: str, ready: bool) -> None:
        await self.grpc.health.set(name, SERVING if ready else NOT_SERVING)

    async def start(self) -> int:
        """Load the models, start serving, and return the bound port."""
        if self.app.source is not None:
            await self.app.source.load_all()
        if self.follower is not None:
            await self.follower.start()
        port = await self.grpc.start()
        for name in self.manager.model_names():
            await self._model_health(name, self.manager.ready(name))
        _log.info("maas-inference listening on port %d", port, extra={"port": port})
        return port

    async def wait(self) -> None:
        """Block until stopped."""
        await self.grpc.wait()

    async def shutdown(self, grace: float | None = None) -> None:
        """Drain and stop."""
        await self.grpc.shutdown(grace)


def parse_args(argv: Sequence[str] | None) -> dict[str, object]:
    """Command-line flags; unset ones fall back to the environment, then defaults."""
    parser = argparse.ArgumentParser(prog="maas-inference", description=__doc__)
    parser.add_argument("--model-repository", help="directory of <model>/<version>/model.onnx")
    parser.add_argument("--registry", help="registry host:port to follow instead")
    parser.add_argument("--registry-token", help="registry reader token")
    parser.add_argument("--models", help="comma-separated models to serve from the registry")
    parser.add_argument("--cache-dir", help="local cache of registry models")
    parser.add_argument(
        "--service-tokens-file",
        help="YAML of hashed tokens callers must send (the token itself: only as "
        "MAAS_INFERENCE_SERVICE_TOKEN, never on the command line)",
    )
    add_server_flags(parser, port=8021, metrics_port=9021)
    add_workers_flag(parser)
    add_client_flags(parser, "the registry")
    parser.add_argument(
        "--explain-max-evaluations",
        type=int,
        help="most model evaluations one Explain request may ask for (default 8192)",
    )
    parser.add_argument(
        "--require-cuda",
        action="store_true",
        default=None,
        help="fail loads that would not run on CUDA",
    )
    return vars(parser.parse_args(argv))


async def serve(settings: InferenceSettings) -> None:
    """Run until SIGTERM or SIGINT, then drain."""
    server = InferenceServer(settings)
    role = WorkerRole.from_env()
    if role is not None:  # one of a supervisor's --workers
        server.grpc.share_port = server.grpc.private_metrics = True
        manager = server.manager
        server.metrics_registry.register(
            ReadyModels(lambda: [(n, manager.ready(n)) for n in manager.model_names()])
        )
    server.grpc.install_signal_handlers()
    await server.start()
    if role is not None:
        role.report(metrics_port=server.grpc.metrics_port)
    await server.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point."""
    settings = InferenceSettings.from_args(parse_args(argv))
    configure_logging(settings.log_level, "inference")
    if not settings.model_repository and not settings.registry:
        _log.error("give --model-repository DIR or --registry HOST:PORT")
        return 2
    if settings.workers > 1:
        if settings.require_cuda:
            # Each worker would load every model onto the GPU (docs/benchmarks.md).
            _log.error("--workers above 1 with --require-cuda: one process per GPU for now")
            return 2
        port = SharedPort("port", settings.port, settings.port_file)
        argv = sys.argv[1:] if argv is None else list(argv)
        return run_supervisor("maas-inference", Supervisor("inference", settings, argv, [port]))
    return run_service("maas-inference", serve(settings), settings.event_loop)


if __name__ == "__main__":
    raise SystemExit(main())
