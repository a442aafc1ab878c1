"""`--workers N`: a supervisor that runs N processes of one service on one port.

Each worker is the ordinary service (`python -m services.<service>.main`, the same
flags) with `--workers 1`, bound with SO_REUSEPORT to the port the supervisor holds
(services/common/workers_ports.py), so the kernel spreads *connections* over them.
The supervisor serves no gRPC itself: it serves the one metrics port, merging the
workers' pages (services/common/workers_metrics.py); its /healthz is 200 only
while every worker serves, and its /readyz only while every worker's /readyz is.
The port files are written once every worker serves.

- SIGTERM or SIGINT: every worker gets SIGTERM and drains as a single process does
  (health NOT_SERVING, in-flight calls finish within --grace-seconds); the supervisor
  exits 0 once all have exited 0, 1 if one did not, and SIGKILLs any still running
  10 s past the grace.
- A worker that exits on its own after serving is started again, after 1 s doubling
  to 30 s while it keeps dying (reset once it has served a minute); one that fails
  before it ever served (a bad flag, a model that does not load) stops the whole
  supervisor with status 1, since its siblings would fail alike.
- Each worker holds a lifeline (services/common/lifeline.py): a supervisor killed
  with SIGKILL leaves no worker behind on the port.
- A service may ask for one file every worker shares (an anonymous memfd, its
  descriptor passed down as the lifeline is): the gateway keeps its rate limits and
  stream slots there (services/gateway/worker_limits.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry

from services.common.files import write_atomically
from services.common.lifeline import LIFELINE_ENV, watch_lifeline
from services.common.metrics import MetricsServer
from services.common.server import PortInUse, start_metrics
from services.common.settings import ServiceSettings
from services.common.tls import TlsError
from services.common.workers_metrics import MergedMetrics, WorkerStatus, answers_ready
from services.common.workers_ports import Reservation, reserve
from services.common.workers_role import INDEX_ENV, REPORT_ENV, SHARED_ENV

_log = logging.getLogger(__name__)
KILL_AFTER_GRACE = 10.0
FIRST_BACKOFF, MAX_BACKOFF, HEALTHY_RUN = 1.0, 30.0, 60.0


class WorkerFailed(RuntimeError):
    """A worker exited before it ever served."""


@dataclass(frozen=True)
class SharedPort:
    """A port every worker binds: its setting, flags, and the file the supervisor writes."""

    setting: str  # "port", "http_port"
    port: int
    port_file: str | None


@dataclass
class _Worker:
    index: int
    process: asyncio.subprocess.Process | None = None
    metrics_port: int = 0
    serving: bool = False
    restarts: int = 0
    started: float = 0.0


class Supervisor:
    """N workers of `service` sharing `ports`; `start()` returns the first shared port."""

    def __init__(
        self,
        service: str,
        settings: ServiceSettings,
        argv: Sequence[str],
        ports: Sequence[SharedPort],
        *,
        shared: Callable[[], int] | None = None,
    ) -> None:
        """`shared` makes a file every worker gets the descriptor of (SHARED_ENV), for
        state they keep together (the gateway's limits table); made once, at start."""
        self.service = service
        self._make_shared = shared
        self._shared_fd: int | None = None
        self.settings = settings
        self.argv = list(argv)
        self.ports = list(ports)
        self.bound: dict[str, int] = {}
        self.metrics_port = 0
        self._workers = [_Worker(i) for i in range(settings.workers)]
        self._reservations: list[Reservation] = []
        self._metrics: MetricsServer | None = None
        self._run_dir: Path | None = None
        self._lifeline: tuple[int, int] | None = None
        self._stopping = asyncio.Event()
        self._requested = asyncio.Event()
        self._watchers: list[asyncio.Task[None]] = []
        self._done: asyncio.Task[int] | None = None

    # -- start ---------------------------------------------------------------------

    async def start(self) -> int:
        """Hold the ports, serve /metrics, start every worker; the first port once all serve."""
        try:
            for shared in self.ports:
                reservation = reserve(
                    self.settings.host, shared.port, shared.setting, self.settings
                )
                self._reservations.append(reservation)
                self.bound[shared.setting] = reservation.port
            self._run_dir = Path(tempfile.mkdtemp(prefix=f"maas-{self.service}-workers-"))
            self._lifeline = os.pipe()  # never written: EOF in every worker when we are gone
            if self._make_shared is not None:
                self._shared_fd = self._make_shared()
            self._metrics = self._start_metrics()
            spawned = await asyncio.gather(
                *(self._spawn(w) for w in self._workers), return_exceptions=True
            )
            for outcome in spawned:
                if isinstance(outcome, BaseException):
                    raise outcome
        except BaseException:
            await self._stop_all(0.0)
            raise
        for shared in self.ports:
            if shared.port_file:
                write_atomically(Path(shared.port_file), f"{self.bound[shared.setting]}\n")
        self._watchers = [asyncio.ensure_future(self._watch(w)) for w in self._workers]
        port = self.bound[self.ports[0].setting]
        _log.info(
            "maas-%s: %d workers listening on port %d",
            self.service,
            len(self._workers),
            port,
            extra={"port": port, "metrics_port": self.metrics_port},
        )
        return port

    def _start_metrics(self) -> MetricsServer:
        registry = CollectorRegistry()
        registry.register(MergedMetrics(self.statuses, len(self._workers)))
        tls = bool(self.settings.tls_cert)
        metrics = MetricsServer(
            registry,
            self.settings.host,
            self.settings.metrics_port,
            tls_cert=self.settings.tls_cert if tls else None,
            tls_key=self.settings.tls_key if tls else None,
            ready=self.ready,
            api_ready=self.api_ready,
        )
        self.metrics_port = start_metrics(metrics, self.settings)
        return metrics

    def _command(self, worker: _Worker) -> list[str]:
        assert self._run_dir is not None
        flags = ["--workers", "1", "--host", self.settings.host, "--metrics-port", "0"]
        for shared in self.ports:
            name = "--" + shared.setting.replace("_", "-")
            own_file = self._run_dir / f"worker-{worker.index}.{shared.setting}"
            flags += [name, str(self.bound[shared.setting]), f"{name}-file", str(own_file)]
        return [sys.executable, "-m", f"services.{self.service}.main", *self.argv, *flags]

    async def _spawn(self, worker: _Worker) -> None:
        """Start one worker and wait until it reports serving; WorkerFailed if it exits first."""
        assert self._lifeline is not None
        lifeline = self._lifeline[0]
        read_end, write_end = os.pipe()
        env = {
            **os.environ,
            LIFELINE_ENV: str(lifeline),
            REPORT_ENV: str(write_end),
            INDEX_ENV: str(worker.index),
        }
        passed = [lifeline, write_end]
        if self._shared_fd is not None:
            env[SHARED_ENV] = str(self._shared_fd)
            passed.append(self._shared_fd)
        try:
            worker.process = await asyncio.create_subprocess_exec(
                *self._command(worker), env=env, pass_fds=passed
            )
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        worker.started = time.monotonic()
        loop = asyncio.get_running_loop()
        line = await loop.run_in_executor(None, _read_report, read_end)
        if not line:
            code = await worker.process.wait()
            raise WorkerFailed(f"worker {worker.index} exited with status {code} before serving")
        worker.metrics_port = int(json.loads(line)["metrics_port"])
        worker.serving = True

    # -- run -----------------------------------------------------------------------

    async def _watch(self, worker: _Worker) -> None:
        """Start the worker again whenever it exits on its own, with a growing backoff."""
        backoff = FIRST_BACKOFF
        while not self._stopping.is_set():
            assert worker.process is not None
            code = await worker.process.wait()
            worker.serving = False
            if self._stopping.is_set():
                return
            if time.monotonic() - worker.started >= HEALTHY_RUN:
                backoff = FIRST_BACKOFF
            _log.warning(
                "worker %d (pid %d) exited with status %d: starting it again in %.0fs",
                worker.index,
                worker.process.pid,
                code,
                backoff,
                extra={"worker": worker.index, "status": code},
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), backoff)
            if self._stopping.is_set():
                return
            backoff = min(MAX_BACKOFF, 2 * backoff)
            worker.restarts += 1
            try:
                await self._spawn(worker)
            except WorkerFailed as exc:
                _log.warning("%s", exc)
            except OSError:
                _log.exception("could not start worker %d", worker.index)

    def statuses(self) -> list[WorkerStatus]:
        """Each worker as /metrics reports it (called from the metrics thread)."""
        return [
            WorkerStatus(
                w.index,
                w.process.pid if w.process is not None else 0,
                w.metrics_port,
                w.serving,
                w.restarts,
            )
            for w in self._workers
        ]

    def ready(self) -> bool:
        """/healthz: every worker serves and no drain has begun."""
        return not self._stopping.is_set() and all(w.serving for w in self._workers)

    def api_ready(self) -> bool:
        """/readyz: every worker serves and says on its own /readyz that it can serve
        its API (asked from the metrics thread)."""
        statuses = self.statuses()
        return self.ready() and all(answers_ready(w.metrics_port) for w in statuses)

    # -- stop ----------------------------------------------------------------------

    def request_shutdown(self) -> None:
        """Start draining every worker once; safe to call from a signal handler."""
        if self._done is None:
            self._done = asyncio.ensure_future(self.shutdown())
            self._requested.set()

    async def shutdown(self, grace: float | None = None) -> int:
        """SIGTERM every worker, wait for all (SIGKILL past the grace); 0 if all exited 0."""
        grace = self.settings.grace_seconds if grace is None else grace
        _log.info("shutting down %d workers: draining for up to %.1fs", len(self._workers), grace)
        return await self._stop_all(grace + KILL_AFTER_GRACE)

    async def _stop_all(self, timeout: float) -> int:
        self._stopping.set()
        processes = [w.process for w in self._workers if w.process is not None]
        for process in processes:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
        codes = await asyncio.gather(*(_wait_or_kill(p, timeout) for p in processes))
        for task in self._watchers:
            task.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)
        for worker in self._workers:
            worker.serving = False
        if self._metrics is not None:
            self._metrics.stop()
            self._metrics = None
        for reservation in self._reservations:
            reservation.close()
        self._reservations.clear()
        if self._lifeline is not None:
            for fd in self._lifeline:
                os.close(fd)
            self._lifeline = None
        if self._shared_fd is not None:
            os.close(self._shared_fd)
            self._shared_fd = None
        if self._run_dir is not None:
            shutil.rmtree(self._run_dir, ignore_errors=True)
            self._run_dir = None
        failed = [c for c in codes if c != 0]
        if failed:
            _log.warning("workers exited with status %s", failed)
        _log.info("stopped")
        return 1 if failed else 0

    async def wait(self) -> int:
        """Block until a requested shutdown has finished; its status."""
        await self._requested.wait()
        assert self._done is not None
        return await self._done

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT drain every worker."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_shutdown)

    async def serve(self) -> int:
        """Run until SIGTERM or SIGINT, then drain; the exit status."""
        self.install_signal_handlers()
        try:
            await self.start()
        except WorkerFailed:
            if self._done is None:
                raise
            # A SIGTERM while starting: the workers it stopped did not fail.
        return await self.wait()


def _read_report(fd: int) -> bytes:
    """What a worker wrote before closing its end: its report line, or b"" if it died."""
    chunks = []
    try:
        while chunk := os.read(fd, 4096):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


async def _wait_or_kill(process: asyncio.subprocess.Process, timeout: float) -> int:
    try:
        return await asyncio.wait_for(process.wait(), timeout)
    except TimeoutError:
        _log.warning("worker pid %d did not stop in %.0fs: killing it", process.pid, timeout)
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        return await process.wait() or 1


def run_supervisor(prog: str, supervisor: Supervisor) -> int:
    """Run a supervisor to the end; a port in use or bad TLS files are one line and 2."""
    watch_lifeline()
    try:
        return asyncio.run(supervisor.serve())
    except (PortInUse, TlsError) as exc:
        sys.stderr.write(f"{prog}: {exc}\n")
        return 2
    except WorkerFailed as exc:
        sys.stderr.write(f"{prog}: {exc}\n")
        return 1
