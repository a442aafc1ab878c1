"""Cold start of a large model: `python -m tools.bench.coldstart [--model smollm2]`.

Measures, on this machine, how long a fresh inference replica that follows the
registry takes from its start to the first answer of a large demo model: first
with an empty cache (it downloads the version's files, verifies them and loads
them), then again with the cache it filled (it only loads). The registry runs on
loopback, so the download time is this machine's disk and gRPC, not a network's.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import grpc
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

from tools.demo import efficientnet, minilm, smollm2
from tools.demo.upload import upload_model_dir
from tools.processes import ServiceProcess

ROOT = Path(__file__).resolve().parents[2]
BUILDERS = {"smollm2": smollm2.build, "minilm": minilm.build, "efficientnet": efficientnet.build}
# A tiny request of each kind, enough to prove the model answers.
PROBES = {
    "smollm2": ("text_input", "BYTES", b"Hi", {"sampling_parameters": b'{"max_tokens": 1}'}),
    "minilm": ("text", "BYTES", b"Hi", {}),
}


def _request(model: str) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model)
    if model == "efficientnet":
        tensor = request.inputs.add(name="image", datatype="UINT8", shape=[1, 224, 224, 3])
        request.raw_input_contents.append(bytes(224 * 224 * 3))
        return request
    name, datatype, value, extra = PROBES[model]
    for input_name, data in {name: value, **extra}.items():
        tensor = request.inputs.add(name=input_name, datatype=datatype, shape=[1])
        tensor.contents.bytes_contents.append(data)
    return request


def first_answer(address: str, model: str, timeout: float) -> float:
    """Seconds until `model` answers a request on `address` (polled every 50 ms)."""
    started = time.monotonic()
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        while True:
            try:
                stub.ModelInfer(_request(model), timeout=5)
                return time.monotonic() - started
            except grpc.RpcError as exc:
                if time.monotonic() - started > timeout:
                    raise RuntimeError(f"{model} did not answer in {timeout}s: {exc}") from None
                time.sleep(0.05)


def measure(model: str, timeout: float) -> dict[str, float]:
    """Upload once, then time a cold and a warm replica."""
    built = ROOT / ".data" / "demo-models" / model
    BUILDERS[model](built)
    with tempfile.TemporaryDirectory(prefix="maas-coldstart-") as tmp:
        work = Path(tmp)
        registry = ServiceProcess(
            "registry",
            ["--data-dir", str(work / "registry"), "--no-auth"],
            log_path=work / "registry.log",
            port_file=work / "registry.port",
        )
        try:
            registry.wait_for_port()
            started = time.monotonic()
            version = upload_model_dir(registry.address, None, model, built, progress=False)
            figures = {
                "size_mib": version.total_size_bytes / (1 << 20),
                "upload_s": time.monotonic() - started,
            }
            cache = work / "cache"
            for label in ("cold", "warm"):
                started = time.monotonic()
                replica = ServiceProcess(
                    "inference",
                    ["--registry", registry.address, "--cache-dir", str(cache)],
                    log_path=work / f"inference-{label}.log",
                    port_file=work / f"inference-{label}.port",
                )
                try:
                    replica.wait_for_port()
                    remaining = timeout - (time.monotonic() - started)
                    first_answer(replica.address, model, remaining)
                    figures[f"{label}_first_answer_s"] = time.monotonic() - started
                finally:
                    replica.stop()
            return figures
        finally:
            registry.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", choices=sorted(BUILDERS))
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "coldstart.json"))
    args = parser.parse_args(argv)
    results = {m: measure(m, args.timeout) for m in args.model or ["smollm2"]}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"{'model':14} {'MiB':>7} {'upload s':>9} {'cold s':>8} {'warm s':>8}")
    for name, f in results.items():
        print(
            f"{name:14} {f['size_mib']:7.1f} {f['upload_s']:9.2f} "
            f"{f['cold_first_answer_s']:8.2f} {f['warm_first_answer_s']:8.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
