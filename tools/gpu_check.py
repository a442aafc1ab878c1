"""Check the CUDA path of the inference service on this machine: `python -m tools.gpu_check`.

1. ONNX Runtime offers CUDAExecutionProvider (onnxruntime-gpu, `maas[gpu]`).
2. A session created the way the service creates it really runs on CUDA (ORT falls
   back to CPU silently when the CUDA or cuDNN libraries do not load), with no compute
   node placed on the CPU (ORT's graph assignment record).
3. The runner the service picks for it uses IO binding (outputs written straight
   into host buffers), with pinned batch buffers only where an allocation succeeded.
4. Its outputs match the CPU provider's.
5. A short timing table: CPU, CUDA with plain `run`, and CUDA with IO binding.

Without a GPU it says so and exits with status 0, so scripts can call it anywhere.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

Tensors = dict[str, np.ndarray]


def conv_model(path: Path, channels: int = 64, size: int = 112, layers: int = 6) -> None:
    """A compute-bound CNN with random weights, written with onnx.helper (no torch)."""
    import onnx
    import onnx.helper as oh
    from onnx import numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits = [], []
    previous, in_ch = "input", 3
    for i in range(layers):
        w = rng.standard_normal((channels, in_ch, 3, 3)).astype(np.float32) * 0.05
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(oh.make_node("Conv", [previous, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]))
        nodes.append(oh.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        previous, in_ch = f"r{i}", channels
    fc = rng.standard_normal((channels, 10)).astype(np.float32) * 0.1
    inits.append(numpy_helper.from_array(fc, "fc"))
    nodes += [
        oh.make_node("GlobalAveragePool", [previous], ["pooled"]),
        oh.make_node("Flatten", ["pooled"], ["flat"]),
        oh.make_node("MatMul", ["flat", "fc"], ["logits"]),
    ]
    value = oh.make_tensor_value_info
    graph = oh.make_graph(
        nodes,
        "gpu_check",
        [value("input", onnx.TensorProto.FLOAT, ["batch", 3, size, size])],
        [value("logits", onnx.TensorProto.FLOAT, ["batch", 10])],
        initializer=inits,
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def timed(run: Callable[[Tensors], Tensors], inputs: Tensors, seconds: float) -> float:
    """Mean milliseconds per call, after two warm-up calls."""
    run(inputs)
    run(inputs)
    calls, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds or calls < 3:
        run(inputs)
        calls += 1
    return 1000 * elapsed / calls


def check(model: Path, batches: Sequence[int], seconds: float) -> int:
    """Run every check on `model`; 0 when all pass, 1 otherwise."""
    import onnxruntime as ort

    from services.inference.binding import IoBindingRunner
    from services.inference.config import ModelConfig
    from services.inference.model import make_runner
    from services.inference.runtime import (
        cpu_compute_nodes,
        create_session,
        placement,
        runner_plan,
        signature_of,
        zeros_for,
    )

    available = ort.get_available_providers()
    print(f"onnxruntime {ort.__version__}, providers: {', '.join(available)}")
    if "CUDAExecutionProvider" not in available:
        print(
            "no GPU: this ONNX Runtime has no CUDAExecutionProvider. On a machine with an "
            "NVIDIA GPU, install maas with the `gpu` extra (onnxruntime-gpu) and run again."
        )
        return 0
    gpu_config = ModelConfig(providers=("cuda",), require_cuda=False)
    gpu = create_session(model, gpu_config)
    active = gpu.get_providers()
    if active[0] != "CUDAExecutionProvider":
        print(f"FAIL: the session fell back to {active[0]}: CUDA or cuDNN libraries did not load")
        return 1
    print(f"ok: session runs on {active[0]}")
    on_cpu = cpu_compute_nodes(gpu)
    if on_cpu:
        print(f"FAIL: compute nodes placed on the CPU: {on_cpu}")
        return 1
    print(f"ok: nodes per provider: {placement(gpu) or 'not recorded by this ONNX Runtime'}")
    signature = signature_of(gpu)
    plan = runner_plan(active, gpu_config, signature)
    bound = make_runner(gpu, signature, plan)
    if not isinstance(bound, IoBindingRunner):
        print(f"FAIL: the service would not use IO binding here ({plan})")
        return 1
    # `pinned` is true only once a pinned allocation has succeeded (not from a signature).
    pinned = "yes" if bound.pinned else f"no ({bound.pinned_reason})"
    outputs = "host buffers" if bound.binds_outputs else "plain run() (dynamic output shapes)"
    print(f"ok: IO binding runner, pinned batch buffers: {pinned}; outputs into {outputs}")
    plain = make_runner(gpu, signature)
    cpu = make_runner(create_session(model, ModelConfig(providers=("cpu",))), signature)

    spec = signature.inputs[0]
    rng = np.random.default_rng(0)
    failed = False
    rows: list[tuple[int, float, float, float, float]] = []
    for batch in batches:
        shape = (batch, *zeros_for(spec).shape[1:])
        x = {spec.name: rng.standard_normal(shape).astype(spec.datatype.numpy)}
        if bound.pinned:  # as the scheduler does for merged batches
            staged = bound.allocate(shape, x[spec.name].dtype)
            staged[...] = x[spec.name]
            x = {spec.name: staged}
        want, got = cpu(x), bound(x)
        error = max(float(np.max(np.abs(want[k] - got[k]))) for k in want)
        if error > 1e-2:
            print(f"FAIL: batch {batch}: CUDA outputs differ from CPU by {error:.3g}")
            failed = True
        t_cpu, t_plain, t_bound = (timed(r, x, seconds) for r in (cpu, plain, bound))
        rows.append((batch, error, t_cpu, t_plain, t_bound))
    if not failed:
        print(f"ok: outputs match CPU (max abs error {max(r[1] for r in rows):.2g})")
    header = ("batch", "cpu ms", "cuda run ms", "cuda iobind ms", "iobind rows/s")
    print("\n{:>5} {:>9} {:>12} {:>15} {:>14}".format(*header))
    for batch, _, t_cpu, t_plain, t_bound in rows:
        print(
            f"{batch:>5} {t_cpu:>9.2f} {t_plain:>12.2f} {t_bound:>15.2f} "
            f"{batch * 1000 / t_bound:>14.0f}"
        )
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m tools.gpu_check [--model PATH] [--batches 1,8,32] [--seconds 1]`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", type=Path, help="an ONNX model with a dynamic batch")
    parser.add_argument("--batches", default="1,8,32", help="batch sizes to time")
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    try:
        import onnxruntime as ort
    except ImportError:
        print("no ONNX Runtime installed: install maas with the `cpu` or `gpu` extra")
        return 0
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return check(Path("(not needed)"), batches, args.seconds)  # says "no GPU", returns 0
    if args.model:
        return check(args.model, batches, args.seconds)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gpu_check.onnx"
        conv_model(path)
        return check(path, batches, args.seconds)


if __name__ == "__main__":
    sys.exit(main())
