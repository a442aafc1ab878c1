"""`maas infer` on the demo embedding model, through a real gateway and inference service."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.tools.cli_stack import maas, serving


async def test_an_embedding_model_prints_each_vectors_size_and_norm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.integration.inference.embedding_models import minilm_dir, repository_with

    config = (minilm_dir() / "config.yaml").read_text()
    async with serving(repository_with(tmp_path / "repository", config)) as gateway:
        texts = ["A man is eating food.", "The stock market fell sharply today."]
        args = ["infer", "minilm", "--text", texts[0], "--text", texts[1], "--url", gateway]
        code, out, err = await maas(capsys, args)
        assert code == 0, err
        assert "embedding: 2 vectors" in out, out
        assert out.count("size 384, norm 1.0000") == 2, out
        code, out, err = await maas(capsys, ["infer", "minilm", "--url", gateway])
    assert code == 2
    assert err.strip() == "maas infer: model 'minilm' takes text: give --text (repeatable)"
