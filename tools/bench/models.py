"""The benchmark's models and the requests it sends them.

- `digits`: the tiny demo CNN (tools.digits, via tools.examples), 8x8 images.
- `encoder`: the medium model, a BERT-style transformer encoder (4 layers, width 256,
  4 heads, 128 tokens; 3.4 M parameters, about 1 GFLOP per request) with seeded
  random weights. Compute dominates, so it shows what the serving layers cost
  relative to ONNX Runtime; it runs at a useful rate on 2 cores.
- `resnet18`: a ResNet-18 (11.7 M parameters, 1.8 GFLOPs per 224x224 image), written
  out here so torchvision is not needed; about 10 images/s on 2 cores, so too slow
  for the standard run, but there for machines with more cores.

Both are built once under `.data/bench-models/` and reused while the code that
makes them is unchanged.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tools.bench.http_load import Encoding, HttpBody, infer_body

if TYPE_CHECKING:
    import torch

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".data" / "bench-models"
MODELS = ("digits", "encoder", "resnet18")
TOKENS = 128


@dataclass(frozen=True)
class BenchModel:
    """An ONNX file and one request's worth of inputs for it."""

    name: str
    path: Path
    inputs: dict[str, np.ndarray]  # batch 1, the shape a client sends

    @property
    def rows(self) -> int:
        """Rows (batch size) of one request."""
        return next(iter(self.inputs.values())).shape[0]


def _resnet18() -> torch.nn.Module:
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.down = (
                nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                if stride != 1 or cin != cout
                else nn.Identity()
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(h)) + self.down(x))

    layers: list[nn.Module] = [
        nn.Conv2d(3, 64, 7, 2, 3, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.MaxPool2d(3, 2, 1),
    ]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [Block(cin, cout, stride), Block(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 1000), nn.Softmax(dim=1)]
    return nn.Sequential(*layers)


def _encoder(
    vocab: int = 1000, width: int = 256, heads: int = 4, layers: int = 4
) -> torch.nn.Module:
    import torch
    from torch import nn

    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv = nn.Linear(width, 3 * width)
            self.out = nn.Linear(width, width)
            self.norm1 = nn.LayerNorm(width)
            self.ff = nn.Sequential(
                nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width)
            )
            self.norm2 = nn.LayerNorm(width)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, t, _ = x.shape
            q, k, v = self.qkv(x).reshape(b, t, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
            attn = torch.softmax(q @ k.transpose(-1, -2) / (width // heads) ** 0.5, dim=-1)
            x = self.norm1(x + self.out((attn @ v).transpose(1, 2).reshape(b, t, width)))
            return self.norm2(x + self.ff(x))

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(vocab, width)
            self.position = nn.Parameter(torch.randn(1, TOKENS, width) * 0.02)
            self.layers = nn.Sequential(*(Layer() for _ in range(layers)))

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return self.layers(self.embed(tokens) + self.position).mean(dim=1)

    return Encoder()


def _fingerprint(name: str) -> str:
    import onnx
    import torch

    digest = hashlib.sha256(f"{name} torch {torch.__version__} onnx {onnx.__version__}".encode())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()[:16]


def build(name: str, cache: Path = CACHE) -> Path:
    """The ONNX file of a benchmark model, exported on first use."""
    if name not in MODELS:
        raise ValueError(f"unknown model '{name}', expected one of {MODELS}")
    target = cache / f"{name}-{_fingerprint(name)}.onnx"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    if name == "digits":
        from tools import digits

        digits.train_and_export(target, holdout_path=cache / f"{target.stem}.npz")
        return target
    import torch

    from tools.export import export_module

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if name == "encoder":
            module = _encoder().eval()
            example = torch.randint(0, 1000, (2, TOKENS))
            parity = torch.randint(0, 1000, (3, TOKENS))
            names = (["tokens"], ["pooled"])
        else:
            module = _resnet18().eval()
            example, parity = torch.rand(2, 3, 224, 224), torch.rand(3, 3, 224, 224)
            names = (["input"], ["probabilities"])
    export_module(
        module,
        (example,),
        target,
        input_names=names[0],
        output_names=names[1],
        opset=18,  # opset 17's ReduceMean has no noop_with_empty_axes: no down-conversion
        parity_inputs=(parity,),
    )
    return target


def load(name_or_path: str) -> BenchModel:
    """A benchmark model by name, or any ONNX file with a dynamic batch (by path)."""
    path = Path(name_or_path) if name_or_path not in MODELS else build(name_or_path)
    name = path.stem.split("-")[0] if name_or_path in MODELS else path.parent.parent.name
    return BenchModel(name or path.stem, path, sample_inputs(path))


def sample_inputs(path: Path, rows: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs of `rows` rows for every input of the model (dynamic dims -> 1)."""
    import onnxruntime as ort

    from services.common.datatypes import by_onnx

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    inputs = {}
    for i, spec in enumerate(session.get_inputs()):
        dims = [d if isinstance(d, int) and d > 0 else 1 for d in spec.shape]
        if dims:
            dims[0] = rows
        datatype = by_onnx(spec.type)
        if datatype is None or datatype.is_bytes:
            raise ValueError(f"input '{spec.name}' has type {spec.type}, not benchmarkable")
        if datatype.numpy.kind == "f":
            array = rng.uniform(0, 1 if i else 16, dims).astype(datatype.numpy)
        else:
            array = rng.integers(0, 10, dims).astype(datatype.numpy)
        inputs[spec.name] = array
    return inputs


def infer_request(model: str, inputs: dict[str, np.ndarray]) -> bytes:
    """A serialized ModelInferRequest with raw contents, built once and sent many times."""
    from maas_proto.inference import grpc_predict_v2_pb2 as pb

    from services.common.datatypes import by_numpy

    request = pb.ModelInferRequest(model_name=model)
    for name, array in inputs.items():
        request.inputs.add(name=name, datatype=by_numpy(array.dtype).name, shape=array.shape)
        request.raw_input_contents.append(np.ascontiguousarray(array).tobytes())
    return request.SerializeToString()


def payloads(model: BenchModel, served_as: str, count: int = 8) -> tuple[bytes, ...]:
    """A few distinct requests (different seeds), so no layer can cache one answer."""
    return tuple(infer_request(served_as, inputs) for inputs in _inputs(model, count))


def http_bodies(model: BenchModel, encoding: Encoding, count: int = 8) -> tuple[HttpBody, ...]:
    """The same requests as `payloads` (same seeds), as v2 REST infer bodies."""
    return tuple(infer_body(inputs, encoding) for inputs in _inputs(model, count))


def _inputs(model: BenchModel, count: int) -> list[dict[str, np.ndarray]]:
    return [
        model.inputs if seed == 0 else sample_inputs(model.path, model.rows, seed)
        for seed in range(count)
    ]
