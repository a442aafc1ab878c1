"""The model registry: models, immutable ONNX versions, aliases and a change feed.

Where things are: `servicer` (gRPC in) -> `app.Registry` (decisions) -> `store`
(metadata: SQLite or PostgreSQL), `blobs` (files, content-addressed), `uploads`
and `validation` (what an upload must pass), `watch` (change feed), `auth`
(bearer tokens), `client` (the async client others use), `main` (`maas-registry`).

Choices worth knowing:
- The first upload of a model creates it; CreateModel exists to set a description
  and labels up front.
- Every file of an upload is verified: model.onnx against the sha256 and size in
  the metadata, each external-data file against its own entry in `extra_files`.
  Undeclared files are refused.
- Every rejection of an upload's content is INVALID_ARGUMENT, a declared size over
  `max_model_bytes` included; RESOURCE_EXHAUSTED comes only from gRPC's own
  message-size limit.
- Version numbers are per model name and never reused, even after the model is
  deleted and created again.
- The filesystem blob store belongs to one registry process: replicas sharing a
  PostgreSQL database need a shared blob store (an object store, later).
"""
