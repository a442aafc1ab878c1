"""Running a benchmark: start what is needed, measure every level of every target,
write the results JSON and the plot."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from tools.bench import measure, perf_analyzer
from tools.bench.http_load import Encoding
from tools.bench.models import BenchModel, http_bodies, load, payloads
from tools.bench.results import machine
from tools.bench.results import write as write  # where `maas bench` and tests find it
from tools.bench.servers import Process, batching_config, start_gateway, start_inference
from tools.bench.stats import Level, Series, results_document
from tools.bench.summary import checks, checks_json, goals, goals_json, goals_text, markdown

_log = logging.getLogger("tools.bench")
TARGETS = ("ort", "inference", "gateway", "gateway-http", "pytriton", "kserve", "kserve-http")
# The gateway's v2 REST infer: tensors as JSON `data`, and as binary tensor data.
HTTP_ENCODINGS: tuple[Encoding, ...] = ("json", "binary")
PROFILE_SECONDS = 10.0  # of load under py-spy per maas target and level


@dataclass
class Plan:
    """What one `maas bench` run measures."""

    models: list[str]
    targets: list[str]
    concurrency: list[int]
    seconds: float
    batching: list[bool] = field(default_factory=lambda: [True])
    inference: str | None = None  # address of a running inference service
    gateway: str | None = None  # address of a running gateway
    gateway_http: str | None = None  # host:port of that gateway's HTTP front end
    processes: int = 2
    max_batch_size: int = 64
    perf_analyzer: list[int] = field(default_factory=list)  # levels to check with it
    model_seconds: dict[str, float] = field(default_factory=dict)  # per-model override
    model_concurrency: dict[str, list[int]] = field(default_factory=dict)
    out: Path = Path("bench/results")
    name: str = ""
    gateway_flags: list[str] = field(default_factory=list)  # e.g. --no-backend-mux
    inference_flags: list[str] = field(default_factory=list)  # e.g. --workers=2
    model_config: dict[str, Any] = field(default_factory=dict)  # added to each config.yaml
    profile: list[int] = field(default_factory=list)  # levels to profile each maas hop at
    profile_native: bool = True  # C frames too (py-spy pauses the process per sample)
    profile_perf: bool = False  # Linux perf (on-CPU time by thread and library), not py-spy
    rounds: int = 1  # of each level, targets interleaved; the median round is kept


class Runner:
    """Measures a Plan, keeping every server it starts until the end."""

    def __init__(self, plan: Plan, say: Callable[[str], None] = print) -> None:
        self.plan = plan
        self.say = say
        self.series: list[Series] = []
        self.notes: list[str] = []
        self.profiles: list[dict[str, Any]] = []

    def run(self) -> dict[str, Any]:
        """Measure everything in the plan and return the results document."""
        for name in self.plan.models:
            model = load(name)
            self.say(f"== {model.name} ({model.path.name})")
            with ExitStack() as stack:
                self._model(model, stack)
        items = checks(self.series)
        reached = goals(self.series)
        document = results_document(
            self.series,
            machine(),
            _plan_json(self.plan),
            checks=checks_json(items),
            goals=goals_json(reached),
            profiles=self.profiles,
            notes=self.notes,
            created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )
        self.say(markdown(self.series, items))
        self.say(goals_text(reached))
        return document

    def _levels(self, model: BenchModel) -> list[int]:
        return self.plan.model_concurrency.get(model.name, self.plan.concurrency)

    def _seconds(self, model: BenchModel) -> float:
        return self.plan.model_seconds.get(model.name, self.plan.seconds)

    def _model(self, model: BenchModel, stack: ExitStack) -> None:
        """Start every target, then measure level by level, each target in turn.

        Interleaving by level keeps the targets' ratios fair on a shared machine,
        whose load drifts over minutes; ONNX Runtime in-process runs right after
        the batching-on service at the effective batch size that service reached."""
        plan = self.plan
        requests = payloads(model, model.name)
        direct = self._direct(model, stack)
        targets = self._start_targets(model, direct, stack)
        reference = next((t for t in targets if _is_reference(t.series)), None)
        ort = measure.ort_session(model.path) if "ort" in plan.targets else None
        ort_series = Series("ORT in-process", "ort", model.name, notes="same effective batch sizes")
        for c in self._levels(model):
            rounds: dict[int, list[Level]] = {}
            for _ in range(max(1, plan.rounds)):
                for i, target in enumerate(targets):
                    rounds.setdefault(i, []).append(self._measure(target, model, requests, c))
            for i, target in enumerate(targets):
                target.series.levels.append(_median(rounds[i]))
            if ort is not None:
                served = reference.series.at(c) if reference else None
                effective = served.effective_batch if served else None
                batch = max(1, round(effective or min(c, plan.max_batch_size)))
                level = measure.ort_level(ort, model.inputs, batch, c, self._seconds(model))
                self.say(
                    f"{ort_series.label:<28} c={c:<4} {level.throughput:>9.1f} req/s  "
                    f"(batch {batch}, {level.latency_ms['p50']:.2f} ms per run)"
                )
                ort_series.levels.append(level)
        self.series += [t.series for t in targets]
        if ort is not None:
            self.series.append(ort_series)
        for c in plan.profile:
            for target in targets:
                if target.series.target in ("inference", "gateway") and target.hops:
                    self._profile(target, model, requests, c)
        on_server = direct.get(True) or direct.get(None)
        if plan.perf_analyzer and on_server is not None:
            self._perf_analyzer(model, "inference", _address(on_server))
        gateway = next((t for t in targets if t.series.target == "gateway"), None)
        if plan.perf_analyzer and gateway is not None and gateway.series.address:
            self._perf_analyzer(model, "gateway", gateway.series.address)

    def _start_targets(
        self, model: BenchModel, direct: dict[bool | None, Process | str], stack: ExitStack
    ) -> list[_Target]:
        """Every gRPC target of the plan, started (or addressed) and ready."""
        plan = self.plan
        targets: list[_Target] = []
        if "inference" in plan.targets:
            targets += [self._target("inference", model, s, mode) for mode, s in direct.items()]
        if {"gateway", "gateway-http"} & set(plan.targets):
            # One gateway per batching mode, in front of that mode's inference service;
            # the batching-on one first, so perf_analyzer checks that one.
            fronted = {None: None} if plan.gateway else dict(direct)
            for mode, backend in fronted.items():
                targets += self._gateway(model, backend, stack, mode)
        for peer in ("pytriton", "kserve"):
            wanted = {peer, f"{peer}-http"} & set(plan.targets)
            if wanted:
                targets += self._peer(peer, model, stack, wanted)
        return targets

    def _direct(self, model: BenchModel, stack: ExitStack) -> dict[bool | None, Process | str]:
        """The inference service(s) to measure: the one given, or one per batching mode."""
        plan = self.plan
        if plan.inference:
            return {None: plan.inference}
        direct: dict[bool | None, Process | str] = {}
        if {"inference", "gateway", "ort"} & set(plan.targets):
            for on in plan.batching:
                started = start_inference(
                    model.name,
                    model.path,
                    {**batching_config(on, plan.max_batch_size), **plan.model_config},
                    extra=plan.inference_flags,
                )
                stack.callback(started.stop)
                direct[on] = started
        return direct

    def _target(
        self,
        kind: str,
        model: BenchModel,
        server: Process | str,
        batching: bool | None,
        stats_address: str | None = None,
        hops: Sequence[tuple[str, Process | str | None]] = (),
    ) -> _Target:
        """`hops`: the hop name and server of each process a request crosses (the
        gateway, then its backend); their CPU is measured where this run started them."""
        address = _address(server)
        mode = "" if batching is None else f" (batching {'on' if batching else 'off'})"
        series = Series(f"{kind}{mode}", kind, model.name, address, batching)
        crossed = hops or ((_hop(kind), server),)
        pids = {name: [s.pid] for name, s in crossed if isinstance(s, Process)}
        return _Target(series, pids, stats_address)

    def _measure(
        self, target: _Target, model: BenchModel, requests: Sequence[bytes], c: int
    ) -> Level:
        series = target.series
        assert series.address is not None
        if target.http is not None:
            assert target.stats_address is not None
            level = measure.http_level(
                f"http://{series.address}/v2/models/{model.name}/infer",
                model.name,
                http_bodies(model, target.http),
                c,
                self._seconds(model),
                stats_address=target.stats_address,
                rows=model.rows,
                processes=self.plan.processes,
                hops=target.hops,
            )
        else:
            level = measure.grpc_level(
                series.address,
                model.name,
                requests,
                c,
                self._seconds(model),
                rows=model.rows,
                processes=self.plan.processes,
                hops=target.hops,
                stats_address=target.stats_address,
            )
        hops = " ".join(f"{hop} {us:g}" for hop, us in level.cpu_us_per_request.items())
        self.say(
            f"{series.label:<28} c={c:<4} {level.throughput:>9.1f} req/s  "
            f"p50 {level.latency_ms['p50']:.2f} ms  p99 {level.latency_ms['p99']:.2f} ms  "
            f"batch {level.effective_batch}  loadgen {level.loadgen_cpu} cores  "
            f"server {level.server_cpu} cores  CPU µs/req {hops or '-'}  errors {level.errors}"
        )
        return level

    def _gateway(
        self,
        model: BenchModel,
        backend: Process | str | None,
        stack: ExitStack,
        batching: bool | None,
    ) -> list[_Target]:
        """The gateway's targets: gRPC (`gateway`), and HTTP JSON and binary
        (`gateway-http`), each in front of the same backend."""
        gateway: Process | str | None = self.plan.gateway
        http = self.plan.gateway_http
        if gateway is None and backend is not None:
            try:
                started = start_gateway([_address(backend)], extra=self.plan.gateway_flags)
            except (RuntimeError, TimeoutError) as exc:
                self._note(f"gateway not measured: it did not start ({_brief(exc)})")
                return []
            stack.callback(started.stop)
            gateway, http = started, started.http_address
        if gateway is None:
            self._note("gateway not measured: no address and no inference service to front")
            return []
        stats = _address(backend) if backend is not None else None
        extra = (("gateway", gateway), ("inference", backend))
        targets = []
        if "gateway" in self.plan.targets:
            targets.append(self._target("gateway", model, gateway, batching, stats, extra))
        if "gateway-http" in self.plan.targets:
            if http is None:
                self._note("gateway HTTP not measured: give --gateway-http with --gateway")
                return targets
            # Statistics over gRPC: the backend's, or the running gateway's (it forwards).
            stats_at = stats or _address(gateway)
            for encoding in HTTP_ENCODINGS:
                kind = f"gateway-http-{encoding}"
                target = self._target(kind, model, gateway, batching, stats_at, extra)
                target.series.address, target.http = http, encoding
                targets.append(target)
        return targets

    def _peer(
        self, peer: str, model: BenchModel, stack: ExitStack, wanted: set[str]
    ) -> list[_Target]:
        """The peer's gRPC target and (`<peer>-http`) its v2 REST, JSON and binary."""
        from tools.bench.peers import start_peer

        try:
            server = start_peer(peer, model.name, model.path, self.plan.max_batch_size)
        except (FileNotFoundError, RuntimeError, TimeoutError) as exc:
            self._note(f"{peer} not measured: {_brief(exc)}")
            return []
        stack.callback(server.stop)
        targets = [self._target(peer, model, server, None)] if peer in wanted else []
        if f"{peer}-http" in wanted:
            for encoding in HTTP_ENCODINGS:
                target = self._target(
                    f"{peer}-http-{encoding}", model, server, None, server.address
                )
                target.series.address, target.http = server.http_address, encoding
                targets.append(target)
        return targets

    def _profile(
        self, target: _Target, model: BenchModel, requests: Sequence[bytes], c: int
    ) -> None:
        """py-spy (or perf) on each maas hop of `target` under one more level at `c`."""
        from tools.bench.profile import profiler

        tool = profiler(self.plan.profile_perf, self.plan.profile_native)
        if tool.missing:
            self._note(f"not profiled: {tool.missing}")
            return
        series = target.series
        assert series.address is not None
        seconds = PROFILE_SECONDS
        load = partial(
            measure.grpc_level,
            series.address,
            model.name,
            requests,
            c,
            seconds,
            rows=model.rows,
            processes=self.plan.processes,
        )
        where = self.plan.out / f"{self.plan.name or 'bench'}-profiles" / f"{series.target}-c{c}"
        level, hops = tool.under_load(target.hops, load, seconds, where)
        for hop in hops:
            self.profiles.append(
                {"model": model.name, "series": series.label, "concurrency": c}
                | {"tool": tool.name, **hop}
            )
            for line in tool.describe(hop, f"{series.label} c={c}"):
                self.say(line)
        self.say(f"    (under {tool.name}: {level.throughput:.0f} req/s, not a measurement)")

    def _perf_analyzer(self, model: BenchModel, target: str, address: str) -> None:
        series = Series(f"perf_analyzer -> {target}", "perf_analyzer", model.name, address)
        for c in self.plan.perf_analyzer:
            level, why = perf_analyzer.measure(address, model.name, c)
            if level is None:
                self._note(f"perf_analyzer against {target} at c={c}: {why}")
                continue
            self.say(
                f"{series.label:<28} c={c:<4} {level.throughput:>9.1f} req/s  "
                f"p50 {level.latency_ms['p50']:.2f} ms  p99 {level.latency_ms['p99']:.2f} ms"
            )
            series.levels.append(level)
        if series.levels:
            self.series.append(series)

    def _note(self, text: str) -> None:
        self.say(f"note: {text}")
        self.notes.append(text)


def _median(levels: Sequence[Level]) -> Level:
    """The round with the median throughput, whole (its latencies and CPU with it)."""
    return sorted(levels, key=lambda lv: lv.throughput)[(len(levels) - 1) // 2]


def _is_reference(series: Series) -> bool:
    """The series whose effective batch sizes in-process ORT reproduces."""
    return series.target == "inference" and series.batching is not False


def _brief(exc: BaseException) -> str:
    """A failed start in one note: its first line and the end of the log (the error)."""
    text = str(exc).strip()
    if len(text) <= 400:
        return text
    first = text.splitlines()[0][:150]
    return f"{first} ... {text[-250:]}"


def _hop(kind: str) -> str:
    """The hop a target's own process is: a peer's, or maas's inference service."""
    peer = kind.split("-", 1)[0]
    return "peer" if peer in ("pytriton", "kserve") else kind.split("-", 1)[0]


@dataclass
class _Target:
    """A server under load: its series, the processes of each hop whose CPU counts,
    where its ModelStatistics are read (a gateway's backend)."""

    series: Series
    hops: dict[str, list[int]]
    stats_address: str | None
    http: Encoding | None = None  # the body encoding of an HTTP target


def _address(server: Process | str) -> str:
    return server if isinstance(server, str) else server.address


def _plan_json(plan: Plan) -> dict[str, Any]:
    data = dict(plan.__dict__)
    data["out"] = str(plan.out)
    return data
