"""EndpointSlice discovery (lightkube) against a fake Kubernetes API server.

No API server can run here (no cluster, no kube-apiserver binary), so a real
HTTP server (pytest-httpserver) fakes one: it speaks the API's wire format for
EndpointSlice list (an EndpointSliceList with its resourceVersion) and watch
(newline-delimited watch events, a 410 Gone ERROR event that forces a new list),
and the tests assert that backends appear and disappear as the slices change.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from lightkube import AsyncClient, KubeConfig
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


def status(code: int, reason: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": reason,
    }


class FakeApi:
    """Answers the list and watch calls in the order a real API server would.

    `failing_lists` lists answer 500 first; `gone_status` makes the expired watch
    answer HTTP 410 itself instead of a 200 stream with a 410 ERROR event.
    """

    def __init__(self, failing_lists: int = 0, gone_status: bool = False) -> None:
        self.lists = 0
        self.failing_lists = failing_lists
        self.gone_status = gone_status
        self.selectors: set[str] = set()
        self.watched_from: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, request: Request) -> Response:
        self.selectors.add(request.args.get("labelSelector", ""))
        watching = request.args.get("watch") in ("true", "True", "1")
        version = request.args.get("resourceVersion", "")
        with self.lock:
            if not watching:
                self.lists += 1
                if self.lists <= self.failing_lists:
                    body = json.dumps(status(500, "InternalError"))
                    return Response(body, status=500, content_type="application/json")
                if self.lists == self.failing_lists + 1:
                    return listing(
                        "100", endpoint_slice("a", [("10.0.0.1", True), ("10.0.0.2", False)])
                    )
                return listing("200", endpoint_slice("c", [("fd00::5", None)], kind="IPv6"))
            self.watched_from.append(version)
        if version == "100":
            b = endpoint_slice("b", [("10.0.0.3", True)])
            b["metadata"]["resourceVersion"] = "101"
            a = endpoint_slice("a", [("10.0.0.1", False), ("10.0.0.2", True)])
            a["metadata"]["resourceVersion"] = "102"
            gone = dict(b, metadata={**b["metadata"], "resourceVersion": "103"})
            return events(("ADDED", b), ("MODIFIED", a), ("DELETED", gone))
        if version == "103":
            expired = status(410, "Expired")
            if self.gone_status:
                return Response(json.dumps(expired), status=410, content_type="application/json")
            return events(("ERROR", expired))
        time.sleep(0.2)  # an idle watch that the server ends
        return events()


def kubeconfig(httpserver: HTTPServer) -> dict[str, Any]:
    """A kubeconfig whose cluster is the fake API server, with a bearer token."""
    server = httpserver.url_for("/").rstrip("/")
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": server}}],
        "users": [{"name": "me", "user": {"token": "t0ken"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "me"}}],
        "current-context": "fake",
    }


@pytest.fixture
async def client(httpserver: HTTPServer) -> AsyncIterator[AsyncClient]:
    """A lightkube client of the fake API server (no proxies from the environment)."""
    api = AsyncClient(KubeConfig.from_dict(kubeconfig(httpserver)), trust_env=False)
    yield api
    await api.close()


def watching_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("endpointslices-")]


async def wait_until(done: Callable[[], bool]) -> None:
    """Poll, with a deadline, until `done()`; the assertions after it tell what failed."""
    for _ in range(250):
        if done():
            return
        await asyncio.sleep(0.02)


FOLLOWED = [
    ["10.0.0.1:8021"],
    ["10.0.0.1:8021", "10.0.0.3:8021"],  # slice b added
    ["10.0.0.2:8021", "10.0.0.3:8021"],  # .1 no longer ready, .2 ready
    ["10.0.0.2:8021"],  # slice b deleted
    ["[fd00::5]:8021"],  # 410 Gone: listed again (an unset `ready` is ready)
]


@pytest.mark.parametrize("gone_status", [False, True], ids=["error-event", "http-410"])
async def test_backends_follow_endpointslices(
    httpserver: HTTPServer, client: AsyncClient, gone_status: bool
) -> None:
    api = FakeApi(gone_status=gone_status)
    httpserver.expect_request(PATH).respond_with_handler(api)
    seen: list[list[str]] = []
    discovery = EndpointSliceDiscovery(
        SERVICE, seen.append, namespace=NAMESPACE, client=client, retry_seconds=0.05
    )
    await discovery.start()
    try:
        assert seen[0] == ["10.0.0.1:8021"]  # the ready endpoint of the first list
        await wait_until(lambda: seen[-1] == ["[fd00::5]:8021"] and "200" in api.watched_from)
    finally:
        await discovery.close()
    assert seen == FOLLOWED
    assert api.lists == 2
    assert api.selectors == {f"kubernetes.io/service-name={SERVICE}"}
    # Each watch starts from its list's resourceVersion, then from the last event's.
    assert api.watched_from[:3] == ["100", "103", "200"]
    assert not watching_tasks()


async def test_failed_lists_back_off_and_retry(httpserver: HTTPServer, client: AsyncClient) -> None:
    api = FakeApi(failing_lists=2)
    httpserver.expect_request(PATH).respond_with_handler(api)
    seen: list[list[str]] = []
    discovery = EndpointSliceDiscovery(
        SERVICE, seen.append, namespace=NAMESPACE, client=client, retry_seconds=0.05
    )
    await discovery.start()
    try:
        assert seen[0] == ["10.0.0.1:8021"]  # after two 500s, the third list
        assert api.lists == 3
        await wait_until(lambda: seen[-1] == ["[fd00::5]:8021"])
    finally:
        await discovery.close()
    assert seen == FOLLOWED
    assert not watching_tasks()


async def test_start_is_bounded_and_close_ends_the_task(
    httpserver: HTTPServer, client: AsyncClient
) -> None:
    api = FakeApi(failing_lists=10**6)  # the API never answers a list
    httpserver.expect_request(PATH).respond_with_handler(api)
    seen: list[list[str]] = []
    discovery = EndpointSliceDiscovery(
        SERVICE, seen.append, namespace=NAMESPACE, client=client, retry_seconds=0.01
    )
    await discovery.start(first_list_timeout=0.3)
    assert seen == []
    assert len(watching_tasks()) == 1
    await discovery.close()
    assert not watching_tasks()
    assert api.lists >= 2  # it retried meanwhile


async def test_port_by_number_and_by_name(httpserver: HTTPServer, client: AsyncClient) -> None:
    for target, expected in (
        (f"{SERVICE}:metrics", "10.0.0.1:9021"),
        (f"{SERVICE}:7000", "10.0.0.1:7000"),
        (SERVICE, "10.0.0.1:8021"),  # 'grpc' by default
    ):
        httpserver.clear()
        httpserver.expect_request(PATH).respond_with_handler(FakeApi())
        seen: list[list[str]] = []
        discovery = EndpointSliceDiscovery(target, seen.append, namespace=NAMESPACE, client=client)
        await discovery.start()
        await discovery.close()
        assert seen[0] == [expected]


async def test_own_client_from_the_local_kubeconfig(
    httpserver: HTTPServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside a pod (no service account), the client comes from $KUBECONFIG; close() closes it."""
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(kubeconfig(httpserver)))  # JSON is YAML
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    authorizations: list[str] = []

    def handler(request: Request) -> Response:
        authorizations.append(request.headers.get("Authorization", ""))
        return FakeApi()(request)

    httpserver.expect_request(PATH).respond_with_handler(handler)
    seen: list[list[str]] = []
    discovery = EndpointSliceDiscovery(SERVICE, seen.append, namespace=NAMESPACE)
    await discovery.start()
    await discovery.close()
    assert seen[0] == ["10.0.0.1:8021"]
    assert authorizations[0] == "Bearer t0ken"
    assert not watching_tasks()
