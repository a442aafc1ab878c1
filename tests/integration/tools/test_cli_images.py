"""`maas infer` on the demo image classifier, through a real gateway and inference
service: a PNG of scikit-image's `chelsea` is cropped on the client and labelled a cat."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.tools.cli_stack import maas, serving
from tools.bench.textservers import demo_model


async def test_an_image_classifier_prints_the_top_5_labels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import skimage.data
    from PIL import Image

    Image.fromarray(skimage.data.chelsea()).save(tmp_path / "cat.png")
    repository = tmp_path / "repository"
    repository.mkdir()
    (repository / "efficientnet").symlink_to(demo_model("efficientnet"), target_is_directory=True)
    async with serving(repository) as gateway:
        args = ["infer", "efficientnet", "--input", str(tmp_path / "cat.png"), "--url", gateway]
        code, out, err = await maas(capsys, args)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[1] == "probabilities: top 5", out
    assert len(lines) == 2 + 5, out
    # The most probable class first: 285, Egyptian cat.
    assert lines[2].split()[1:] == ["285", "Egyptian", "cat"], out
    probabilities = [float(line.split()[0]) for line in lines[2:]]
    assert probabilities == sorted(probabilities, reverse=True)
