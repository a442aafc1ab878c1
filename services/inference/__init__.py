"""The inference service: ONNX Runtime sessions behind the v2 protocol."""
