"""`python -m tools.gpu_smoke [--quick] [--out DIR] [--efficientnet DIR]`; see the package."""

from __future__ import annotations

import argparse
import functools
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from tools.gpu_smoke import sections, served
from tools.gpu_smoke.report import Report

_log = logging.getLogger("gpu_smoke")


def _efficientnet(args: argparse.Namespace, out: Path) -> Path | None:
    """The EfficientNet-Lite0 demo model: given, or built here when torch is installed."""
    if args.efficientnet:
        return Path(args.efficientnet)
    if args.quick:
        return None
    try:
        from tools.demo import efficientnet

        target = out / "efficientnet"
        efficientnet.build(target)
    except Exception as exc:  # noqa: BLE001 - the figures then use the small CNN, and say so
        _log.warning("EfficientNet-Lite0 could not be built here (%s); using the small CNN", exc)
        return None
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.gpu_smoke", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("gpu_smoke"), help="output folder")
    parser.add_argument("--quick", action="store_true", help="small model, short timings")
    parser.add_argument("--efficientnet", help="a built tools/demo efficientnet model folder")
    parser.add_argument("--seconds", type=float, help="per measured level (default 10; quick 0.5)")
    parser.add_argument("--device-id", type=int, default=0, help="the CUDA device to check")
    parser.add_argument(
        "--figures-on-cpu", action="store_true", help="run section 7 without CUDA as well"
    )
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(out / "gpu_smoke.log", mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    root.addHandler(handler)
    root.addHandler(console)
    began = time.perf_counter()
    try:
        from tools.gpu_check import conv_model

        model = out / "conv.onnx"
        if args.quick:
            conv_model(model, channels=8, size=32, layers=2)
        else:
            conv_model(model)
        ctx = sections.Context(
            out=out,
            model=model,
            quick=args.quick,
            seconds=args.seconds or (0.5 if args.quick else 10.0),
            efficientnet=_efficientnet(args, out),
            device_id=args.device_id,
        )
        report = Report(quick=args.quick)
        steps: list[tuple[str, Callable[..., None]]] = [
            ("1 versions, providers, devices", sections.versions),
            ("2 node placement per provider", sections.placement),
            ("3 pinned allocation", sections.pinned),
            ("4 CPU vs GPU through the service", served.service_path),
            ("5 require_cuda failure paths", sections.require_cuda),
            ("6 GPU memory by batch size", sections.memory),
            (
                "7 goal-4 figures",
                functools.partial(served.figures, on_cpu=args.figures_on_cpu),
            ),
        ]
        for name, step in steps:
            report.run(name, functools.partial(step, ctx))
        report.write(out / "gpu_smoke.json")
        _log.info(
            "done in %.0fs: %s; %s",
            time.perf_counter() - began,
            out / "gpu_smoke.json",
            ", ".join(f"{s.name.split()[0]}={s.status}" for s in report.sections),
        )
        return 1 if report.failed else 0
    finally:
        root.removeHandler(handler)
        root.removeHandler(console)
        handler.close()


if __name__ == "__main__":
    sys.exit(main())
