"""Backends from the Kubernetes EndpointSlice API, watched with the official client.

The slices of a Service carry the label `kubernetes.io/service-name=<service>`;
every ready endpoint address of every slice, at the chosen port, is a backend.
The client is synchronous, so list-then-watch runs in a thread of its own and
hands each new set to the event loop. An expired watch (410 Gone) lists again.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch

from services.gateway.discovery import Update, host_port

_log = logging.getLogger(__name__)
SERVICE_LABEL = "kubernetes.io/service-name"
DEFAULT_PORT_NAME = "grpc"
NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def parse_target(target: str) -> tuple[str, str | int | None]:
    """('service', port name, number or None) from 'service[:port]'."""
    service, _, port = target.partition(":")
    if not port:
        return service, None
    return service, int(port) if port.isdigit() else port


def own_namespace() -> str:
    """The pod's namespace, from its service account, else 'default'."""
    try:
        return NAMESPACE_FILE.read_text().strip() or "default"
    except OSError:
        return "default"


def default_api_client() -> k8s.ApiClient:
    """In-cluster credentials when running in a pod, else the local kubeconfig."""
    try:
        k8s_config.load_incluster_config()
    except k8s_config.ConfigException:
        k8s_config.load_kube_config()
    return k8s.ApiClient()


def slice_port(ports: list[Any] | None, wanted: str | int | None) -> int | None:
    """The port of a slice to use: by number, by name, else 'grpc', else the only one."""
    if isinstance(wanted, int):
        return wanted
    ports = ports or []
    name = wanted or DEFAULT_PORT_NAME
    for port in ports:
        if port.name == name and port.port:
            return int(port.port)
    if wanted is None and len(ports) == 1 and ports[0].port:
        return int(ports[0].port)
    return None


def slice_addresses(endpoint_slice: Any, wanted: str | int | None) -> set[str]:
    """host:port of every ready endpoint of one EndpointSlice."""
    port = slice_port(endpoint_slice.ports, wanted)
    if port is None:
        return set()
    found: set[str] = set()
    for endpoint in endpoint_slice.endpoints or []:
        conditions = endpoint.conditions
        # The API says an unset `ready` means ready.
        if conditions is not None and conditions.ready is False:
            continue
        found.update(host_port(address, port) for address in endpoint.addresses or [])
    return found


class EndpointSliceDiscovery:
    """Lists, then watches, the EndpointSlices of one Service in one namespace."""

    def __init__(
        self,
        target: str,
        update: Update,
        *,
        namespace: str | None = None,
        api_client: k8s.ApiClient | None = None,
        watch_seconds: int = 60,
        retry_seconds: float = 1.0,
    ) -> None:
        self.service, self.port = parse_target(target)
        self.namespace = namespace or own_namespace()
        self.update = update
        self.watch_seconds = watch_seconds
        self.retry_seconds = retry_seconds
        self._api_client = api_client
        self._slices: dict[str, set[str]] = {}
        self._stop = threading.Event()
        self._listed = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._watch: k8s_watch.Watch | None = None

    async def start(self, first_list_timeout: float = 5.0) -> None:
        """Start the watch thread and wait (bounded) for the first listing."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(
            target=self._run, name=f"endpointslices-{self.service}", daemon=True
        )
        self._thread.start()
        await asyncio.to_thread(self._listed.wait, first_list_timeout)

    async def close(self) -> None:
        """Stop watching; the thread ends at its next event or timeout."""
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()

    def _publish(self) -> None:
        addresses = sorted(set().union(*self._slices.values())) if self._slices else []
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self.update, addresses)
        except RuntimeError:  # the loop closed meanwhile
            self._stop.set()

    def _run(self) -> None:
        api = k8s.DiscoveryV1Api(self._api_client or default_api_client())
        selector = f"{SERVICE_LABEL}={self.service}"
        version: str | None = None
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                if version is None:
                    version = self._list(api, selector)
                version = self._follow(api, selector, version)
            except k8s.ApiException as exc:
                if exc.status == 410:  # the watch is too old: list again
                    version = None
                    continue
                _log.warning(
                    "EndpointSlice API error", extra={"status": exc.status, "reason": exc.reason}
                )
                version = None
            except Exception as exc:  # noqa: BLE001 - the watch must outlive network errors
                if self._stop.is_set():
                    return
                _log.warning("EndpointSlice watch failed", extra={"error": repr(exc)})
                version = None
            # Never spin: a watch that ends at once waits a little before the next.
            pause = self.retry_seconds - (time.monotonic() - started)
            if pause > 0:
                self._stop.wait(pause)

    def _list(self, api: k8s.DiscoveryV1Api, selector: str) -> str:
        listing = api.list_namespaced_endpoint_slice(self.namespace, label_selector=selector)
        self._slices = {_name(s): slice_addresses(s, self.port) for s in listing.items or []}
        self._publish()
        self._listed.set()
        return str(listing.metadata.resource_version if listing.metadata else "")

    def _follow(self, api: k8s.DiscoveryV1Api, selector: str, version: str) -> str:
        """Apply watch events until the server ends the stream; the last resourceVersion."""
        self._watch = watch = k8s_watch.Watch()
        for event in watch.stream(
            api.list_namespaced_endpoint_slice,
            self.namespace,
            label_selector=selector,
            resource_version=version,
            timeout_seconds=self.watch_seconds,
            _request_timeout=self.watch_seconds + 30,
        ):
            if self._stop.is_set():
                break
            if event["type"] not in ("ADDED", "MODIFIED", "DELETED"):
                continue  # BOOKMARK: only the resourceVersion moves on
            endpoint_slice = event["object"]
            name = _name(endpoint_slice)
            if event["type"] == "DELETED":
                self._slices.pop(name, None)
            else:
                self._slices[name] = slice_addresses(endpoint_slice, self.port)
            self._publish()
        return str(watch.resource_version or version)


def _name(endpoint_slice: Any) -> str:
    return str(endpoint_slice.metadata.name)
