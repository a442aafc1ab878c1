"""The image preprocessing the `efficientnet` demo expects from its clients.

The served model takes UINT8 RGB [batch, 224, 224, 3] and normalises in its graph,
so a client only sizes the picture: the usual ImageNet evaluation crop (shorter
side to 256, then the centre 224 x 224; 0.875 of the shorter side, as the
EfficientNet papers evaluate).
"""

from __future__ import annotations

import numpy as np

SIZE = 224
RESIZE = 256


def preprocess(image: np.ndarray, size: int = SIZE, resize: int = RESIZE) -> np.ndarray:
    """uint8 HWC RGB `size` x `size` from an HWC (RGB or RGBA) or HW (grey) image."""
    from PIL import Image

    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {array.dtype}")
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise ValueError(f"expected an HxWx3 (or x4) or HxW image, got shape {list(array.shape)}")
    picture = Image.fromarray(np.ascontiguousarray(array[..., :3]))
    scale = resize / min(picture.width, picture.height)
    width = max(size, round(picture.width * scale))
    height = max(size, round(picture.height * scale))
    picture = picture.resize((width, height), Image.Resampling.BILINEAR)
    left, top = (width - size) // 2, (height - size) // 2
    return np.asarray(picture.crop((left, top, left + size, top + size)), dtype=np.uint8)
