"""EndpointSlice discovery with the official `kubernetes` client against a fake API server.

There is no cluster here, so this is the only kind of test possible: a
pytest-httpserver plays the Kubernetes API, serving a list and then a watch
stream of EndpointSlice objects (and a 410 Gone that forces a new list), and the
test asserts that backends appear and disappear as the slices change.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

from kubernetes import client as k8s
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from services.gateway.endpointslices import EndpointSliceDiscovery

NAMESPACE = "maas"
SERVICE = "maas-inference-headless"
PATH = f"/apis/discovery.k8s.io/v1/namespaces/{NAMESPACE}/endpointslices"


def endpoint_slice(
    name: str, endpoints: list[tuple[str, bool | None]], kind: str = "IPv4"
) -> dict[str, Any]:
    """An EndpointSlice of the Service with a `grpc` and a `metrics` port."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": {"kubernetes.io/service-name": SERVICE},
        },
        "addressType": kind,
        "endpoints": [
            {"addresses": [ip], **({"conditions": {"ready": ready}} if ready is not None else {})}
            for ip, ready in endpoints
        ],
        "ports": [
            {"name": "metrics", "port": 9021, "protocol": "TCP"},
            {"name": "grpc", "port": 8021, "protocol": "TCP"},
        ],
    }


def listing(version: str, *slices: dict[str, Any]) -> Response:
    body = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSliceList",
        "metadata": {"resourceVersion": version},
        "items": list(slices),
    }
    return Response(json.dumps(body), content_type="application/json")


def events(*items: tuple[str, dict[str, Any]]) -> Response:
    lines = "".join(json.dumps({"type": t, "object": o}) + "\n" for t, o in items)
    return Response(lines, content_type="application/json")


class FakeApi:
    """Answers the list and watch calls in the order a real API server would."""

    def __init__(self) -> None:
        self.lists = 0
        self.selectors: set[str] = set()
        self.lock = threading.Lock()

    def __call__(self, request: Request) -> Response:
        self.selectors.add(request.args.get("labelSelector", ""))
        watching = request.args.get("watch") in ("true", "True", "1")
        version = request.args.get("resourceVersion", "")
        with self.lock:
            if not watching:
                self.lists += 1
                if self.lists == 1:
                    return listing(
                        "100", endpoint_slice("a", [("10.0.0.1", True), ("10.0.0.2", False)])
                    )
                return listing("200", endpoint_slice("c", [("fd00::5", None)], kind="IPv6"))
        if version == "100":
            b = endpoint_slice("b", [("10.0.0.3", True)])
            b["metadata"]["resourceVersion"] = "101"
            a = endpoint_slice("a", [("10.0.0.1", False), ("10.0.0.2", True)])
            a["metadata"]["resourceVersion"] = "102"
            gone = dict(b, metadata={**b["metadata"], "resourceVersion": "103"})
            return events(("ADDED", b), ("MODIFIED", a), ("DELETED", gone))
        if version == "103":
            status = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}
            return events(("ERROR", status))
        time.sleep(0.2)  # an idle watch that the server ends
        return events()


async def test_backends_follow_endpointslices(httpserver: HTTPServer) -> None:
    api = FakeApi()
    httpserver.expect_request(PATH).respond_with_handler(api)
    config = k8s.Configuration()
    config.host = httpserver.url_for("/").rstrip("/")
    seen: list[list[str]] = []
    discovery = EndpointSliceDiscovery(
        SERVICE,
        seen.append,
        namespace=NAMESPACE,
        api_client=k8s.ApiClient(config),
        retry_seconds=0.05,
    )
    await discovery.start()
    try:
        assert seen[0] == ["10.0.0.1:8021"]  # the ready endpoint of the first list
        for _ in range(200):
            if seen[-1] == ["[fd00::5]:8021"]:
                break
            await asyncio.sleep(0.02)
    finally:
        await discovery.close()
    assert seen == [
        ["10.0.0.1:8021"],
        ["10.0.0.1:8021", "10.0.0.3:8021"],  # slice b added
        ["10.0.0.2:8021", "10.0.0.3:8021"],  # .1 no longer ready, .2 ready
        ["10.0.0.2:8021"],  # slice b deleted
        ["[fd00::5]:8021"],  # 410 Gone: listed again
    ]
    assert api.lists == 2
    assert api.selectors == {f"kubernetes.io/service-name={SERVICE}"}


async def test_port_by_number_and_by_name(httpserver: HTTPServer) -> None:
    config = k8s.Configuration()
    config.host = httpserver.url_for("/").rstrip("/")
    for target, expected in (
        (f"{SERVICE}:metrics", "10.0.0.1:9021"),
        (f"{SERVICE}:7000", "10.0.0.1:7000"),
    ):
        httpserver.clear()
        httpserver.expect_request(PATH).respond_with_handler(FakeApi())
        seen: list[list[str]] = []
        discovery = EndpointSliceDiscovery(
            target, seen.append, namespace=NAMESPACE, api_client=k8s.ApiClient(config)
        )
        await discovery.start()
        await discovery.close()
        assert seen[0] == [expected]
