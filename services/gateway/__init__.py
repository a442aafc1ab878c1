"""The public gateway: the v2 inference API in front of many inference backends.

A request enters in `servicer` (bytes, never decoded: `wire` reads the model and
version), is decided on in `app` (API keys from `auth`, the version from the
registry's `routes` kept by `follower`, traffic splits from `canary`), and is
sent by `forward` to a backend that `pool` picks per request (`balancer`) among
those `discovery` / `endpointslices` found. `main` wires it from `settings`.
"""
