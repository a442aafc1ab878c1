"""Explanations: attributions for one prediction, computed with the model's own batched
inference (maas.explain.v1.Explainer)."""
