"""Concurrent measurements while a category runs: event-loop stalls and process resources.

The stall probe runs in a process of its own, so that the harness's own work (building
a 32 MB message) cannot delay it: one thread per service sends health Checks in a
loop, each on its own channel, and keeps the longest. A health Check is answered on
the service's event loop, so its latency is how long that loop was busy. The
sampler reads RSS and thread counts with psutil every few milliseconds.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import psutil  # type: ignore[import-untyped]  # no stubs in the dev extras

PROBE_INTERVAL_S = 0.01
FENCE_TIMEOUT_S = 60.0
SAMPLE_INTERVAL_S = 0.02
MB = 1024 * 1024


def _probe_main(targets: dict[str, str], conn: Connection) -> None:
    """Child process: probe every target until told to stop; answer each 'collect'."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    lock = threading.Lock()
    longest = dict.fromkeys(targets, 0.0)
    errors = dict.fromkeys(targets, 0)
    # When the last call that completed had started (CLOCK_MONOTONIC, the same in every
    # process): a fence waits until each target answered a call started after it.
    answered_from = dict.fromkeys(targets, 0.0)
    stop = threading.Event()

    def loop(name: str, address: str) -> None:
        with grpc.insecure_channel(address) as channel:
            check = health_pb2_grpc.HealthStub(channel).Check
            while not stop.is_set():
                start = time.monotonic()
                try:
                    check(health_pb2.HealthCheckRequest(), timeout=30.0)
                    failed = False
                except grpc.RpcError:
                    failed = True
                took = (time.monotonic() - start) * 1000
                with lock:
                    longest[name] = max(longest[name], took)
                    errors[name] += failed
                    answered_from[name] = start
                stop.wait(PROBE_INTERVAL_S)

    threads = [threading.Thread(target=loop, args=item, daemon=True) for item in targets.items()]
    for thread in threads:
        thread.start()
    conn.send("ready")
    while True:
        command, fence = conn.recv()
        deadline = time.monotonic() + FENCE_TIMEOUT_S
        while fence and time.monotonic() < deadline:
            with lock:
                if all(t >= fence for t in answered_from.values()):
                    break
            time.sleep(PROBE_INTERVAL_S / 2)
        with lock:
            figures = {"stall_ms": dict(longest), "errors": dict(errors)}
            for name in targets:
                longest[name], errors[name] = 0.0, 0
        if command == "stop":
            stop.set()
            conn.send(figures)
            return
        conn.send(figures)


class StallProbe:
    """The probe process, which keeps the longest probe latency per service."""

    def __init__(self, targets: dict[str, str]) -> None:
        context = multiprocessing.get_context("spawn")  # grpc does not survive a fork
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_probe_main, args=(targets, child), daemon=True)
        self._process.start()
        if not self._conn.poll(60) or self._conn.recv() != "ready":
            self._process.kill()
            raise RuntimeError("the stall probe did not start")

    def collect(self, fence: float = 0.0) -> dict[str, Any]:
        """The longest latencies since the last collect; with a `fence` (time.monotonic()),
        once every service has answered a probe sent after it, so that a stall that
        outlasts its request (memory freed after the reply) is counted with it."""
        self._conn.send(("collect", fence))
        figures: dict[str, Any] = self._conn.recv()
        return figures

    def close(self) -> None:
        if self._process.is_alive():
            self._conn.send(("stop", 0.0))
            if self._conn.poll(10):
                self._conn.recv()
            self._process.join(10)
        if self._process.is_alive():
            self._process.kill()


@dataclass(eq=False)  # open windows are told apart by identity
class Window:
    """Peaks seen while a window was open, against the values when it opened."""

    base_rss: dict[str, int]
    peak_rss: dict[str, int]
    base_threads: dict[str, int]
    peak_threads: dict[str, int] = field(default_factory=dict)

    def growth_mb(self) -> dict[str, float]:
        return {s: (self.peak_rss[s] - self.base_rss[s]) / MB for s in self.base_rss}

    def thread_growth(self) -> dict[str, int]:
        return {s: self.peak_threads.get(s, 0) - self.base_threads[s] for s in self.base_threads}


class Sampler:
    """RSS and threads of the services' processes, sampled in a thread, into open windows."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self._windows: list[Window] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def read(self) -> tuple[dict[str, int], dict[str, int]]:
        rss, threads = {}, {}
        for name, proc in self._procs.items():
            try:
                with proc.oneshot():
                    rss[name] = proc.memory_info().rss
                    threads[name] = proc.num_threads()
            except psutil.Error:
                rss[name], threads[name] = 0, 0
        return rss, threads

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL_S):
            rss, threads = self.read()
            with self._lock:
                for w in self._windows:
                    for name in rss:
                        w.peak_rss[name] = max(w.peak_rss[name], rss[name])
                        w.peak_threads[name] = max(w.peak_threads.get(name, 0), threads[name])

    @contextmanager
    def window(self) -> Iterator[Window]:
        """Peaks while the block runs (sampled once more at its end)."""
        rss, threads = self.read()
        w = Window(dict(rss), dict(rss), threads, dict(threads))
        with self._lock:
            self._windows.append(w)
        try:
            yield w
        finally:
            rss, threads = self.read()
            with self._lock:
                self._windows.remove(w)
                for name in rss:
                    w.peak_rss[name] = max(w.peak_rss[name], rss[name])
                    w.peak_threads[name] = max(w.peak_threads.get(name, 0), threads[name])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
