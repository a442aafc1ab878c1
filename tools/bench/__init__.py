"""`maas bench`: throughput and latency of maas against in-process ONNX Runtime and peers.

    maas bench                      # the standard comparison (what `make bench` runs)
    maas bench --preset peers       # maas beside PyTriton and KServe (`make bench-peers`)
    maas bench --preset peers --rounds 3 --gateway-flag=--no-backend-mux   # goals 1 and 2
    maas bench --targets inference,gateway --concurrency 16 --profile 16   # py-spy per hop
    maas bench --targets inference --concurrency 16 --profile 16 --profile-perf   # perf per hop
    maas bench --targets inference,ort --models digits --concurrency 1,4,16 --seconds 5
    maas bench --targets inference --inference host:8021 --gateway host:8001
    maas bench --targets gateway,gateway-http --models digits --batching on --seconds 10
    maas bench generation           # text models: streamed generation (tools/bench/generation.py)
    maas bench embeddings           # and sentence embeddings (tools/bench/embeddings.py)
    maas bench ab --b-flag=--event-loop=asyncio   # one hop, two flag sets (tools/bench/ab.py)

Targets: `ort` (ONNX Runtime in this process at the service's effective batch sizes,
the physical limit), `inference` (direct), `gateway` (gRPC), `gateway-http` (the
gateway's v2 REST infer, twice: JSON tensors and binary tensor data), `pytriton`,
`kserve`, `kserve-http` (KServe's v2 REST, JSON and binary). Without
addresses the bench starts its own services on port 0 with a generated config.yaml,
once per `--batching` mode. Results go to bench/results/<date>.json and .png.
"""

from __future__ import annotations

import argparse
import importlib
import logging
from pathlib import Path
from typing import Any

# `maas bench generation|embeddings|ab`: modules of tools.bench with add_arguments and run.
SUITES = ("generation", "embeddings", "ab")

PRESETS: dict[str, dict[str, Any]] = {
    # About 7 minutes on 2 cores.
    "standard": {
        "models": ["digits", "encoder"],
        "targets": ["inference", "gateway", "ort"],
        "concurrency": [1, 4, 16, 32, 64],
        "seconds": 4.0,
        "batching": [True, False],
        "perf_analyzer": [1, 16],
        "model_seconds": {"encoder": 8.0},
        "model_concurrency": {"encoder": [1, 4, 16]},
        "name_suffix": "",
    },
    # About 3 minutes on 2 cores, after the peers' venvs are built.
    "peers": {
        "models": ["digits"],
        "targets": ["inference", "gateway", "pytriton", "kserve"],
        "concurrency": [1, 4, 16, 64],
        "seconds": 4.0,
        "batching": [True],
        "perf_analyzer": [],
        "name_suffix": "-peers",
    },
}


def _names(text: str) -> list[str]:
    return [x for x in text.split(",") if x]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def _modes(text: str) -> list[bool]:
    modes = {"on": True, "off": False}
    try:
        return [modes[x] for x in text.split(",") if x]
    except KeyError:
        raise argparse.ArgumentTypeError(f"expected on, off or on,off; got {text!r}") from None


def _mapping(text: str) -> dict[str, Any]:
    from services.common.errors import InvalidArgument
    from services.common.yamltext import load_mapping

    try:
        return load_mapping(text, source="--model-config")
    except InvalidArgument as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The bench's flags; each overrides the preset's value."""
    parser.add_argument("--preset", choices=sorted(PRESETS), default="standard")
    parser.add_argument(
        "--models", type=lambda t: t.split(","), help="digits,encoder,resnet18 or ONNX paths"
    )
    parser.add_argument(
        "--targets",
        type=lambda t: t.split(","),
        help="ort,inference,gateway,gateway-http,pytriton,kserve",
    )
    parser.add_argument("--concurrency", type=_ints, help="levels, e.g. 1,4,16,64")
    parser.add_argument("--seconds", type=float, help="measured seconds per level")
    parser.add_argument("--batching", type=_modes, help="on, off, or on,off")
    parser.add_argument("--inference", help="address of a running inference service")
    parser.add_argument("--gateway", help="address of a running gateway")
    parser.add_argument("--gateway-http", help="host:port of that gateway's HTTP front end")
    parser.add_argument("--processes", type=int, default=2, help="load generator processes")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure each level this many times, targets interleaved; keep the median",
    )
    parser.add_argument("--perf-analyzer", type=_ints, help="levels to check with perf_analyzer")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--name", default="", help="file name (default: the UTC date and time)")
    parser.add_argument(
        "--gateway-flag",
        action="append",
        default=[],
        help="a flag for the gateways this run starts, e.g. --gateway-flag=--no-backend-mux",
    )
    parser.add_argument(
        "--inference-flag",
        action="append",
        default=[],
        help="a flag for the inference services this run starts, e.g. --inference-flag=--workers=2",
    )
    parser.add_argument(
        "--model-config",
        type=_mapping,
        default={},
        help="YAML keys added to the config.yaml of the models this run serves, "
        "e.g. --model-config 'inline_run_us: 0'",
    )
    parser.add_argument(
        "--profile",
        type=_ints,
        default=[],
        help="levels at which to profile each maas hop with py-spy (tools/bench/venvs.sh prof)",
    )
    parser.add_argument(
        "--profile-python",
        dest="profile_native",
        action="store_false",
        help="profile Python frames only (py-spy never pauses the server; no C frames)",
    )
    parser.add_argument(
        "--profile-perf",
        action="store_true",
        help="profile with Linux perf instead: on-CPU time by thread and library, unbiased "
        "by system calls (py-spy's native samples over-weight them)",
    )
    # Text models have their own suites, each with its own flags after its name.
    suites = parser.add_subparsers(dest="suite", metavar="{generation,embeddings,ab}")
    for suite in SUITES:
        module = importlib.import_module(f"tools.bench.{suite}")
        sub = suites.add_parser(
            suite,
            help=module.HELP,
            description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(sub)


def plan_from_args(args: argparse.Namespace) -> Any:
    """A Plan from the preset, overridden by the flags given."""
    from tools.bench.run import Plan

    preset = dict(PRESETS[args.preset])
    suffix = preset.pop("name_suffix")
    for key in ("models", "targets", "concurrency", "seconds", "batching", "perf_analyzer"):
        value = getattr(args, key)
        if value is not None:
            preset[key] = value
            if key in ("seconds", "concurrency"):
                preset.pop(f"model_{key}", None)
    import datetime as dt

    name = args.name or dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H%M%SZ") + suffix
    return Plan(
        inference=args.inference,
        gateway=args.gateway,
        gateway_http=args.gateway_http,
        processes=args.processes,
        out=args.out,
        name=name,
        gateway_flags=args.gateway_flag,
        inference_flags=args.inference_flag,
        model_config=args.model_config,
        profile=args.profile,
        profile_native=args.profile_native,
        profile_perf=args.profile_perf,
        rounds=args.rounds,
        **preset,
    )


def run(args: argparse.Namespace) -> int:
    """Measure, then write the JSON and the PNG."""
    from tools.bench.run import Runner, write

    logging.basicConfig(level=logging.WARNING)
    if getattr(args, "suite", None):
        return int(importlib.import_module(f"tools.bench.{args.suite}").run(args))
    plan = plan_from_args(args)
    document = Runner(plan).run()
    json_path, png_path = write(document, plan.out, plan.name)
    print(f"wrote {json_path} and {png_path}")
    return 0


def register(subparsers: Any) -> None:
    """Add `maas bench` to the CLI."""
    parser = subparsers.add_parser(
        "bench",
        help="benchmark maas against in-process ONNX Runtime and peers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(func=run)
