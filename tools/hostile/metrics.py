"""Counters read from a service's /metrics, to count what hostile calls cost it."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def scrape(port: int, host: str = "localhost") -> str:
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as reply:
        text: str = reply.read().decode()
    return text


def calls_by_method(text: str, service: str) -> dict[str, float]:
    """maas_<service>_grpc_requests_total summed over codes, by the method's last part."""
    wanted = f"maas_{service}_grpc_requests"
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != wanted:
            continue
        for sample in family.samples:
            if not sample.name.endswith("_total"):
                continue
            method = sample.labels.get("method", "").rsplit("/", 1)[-1]
            found[method] = found.get(method, 0.0) + sample.value
    return found


def added(before: dict[str, float], after: dict[str, float]) -> dict[str, int]:
    """Calls per method between two scrapes, health checks left out, zeros dropped."""
    out = {}
    for method, value in after.items():
        delta = int(value - before.get(method, 0.0))
        if delta and method not in {"Check", "Watch"}:
            out[method] = delta
    return out
