"""The model registry: models, immutable ONNX versions, aliases and a change feed."""
