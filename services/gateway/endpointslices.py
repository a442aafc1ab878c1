"""Backends from the Kubernetes EndpointSlice API, watched with lightkube.

The slices of a Service carry the label `kubernetes.io/service-name=<service>`;
every ready endpoint address of every slice, at the chosen port, is a backend.
lightkube's client is asyncio-native (the official `kubernetes` client, sync and
~150 MB with its aio copy, needed a thread), so list-then-watch runs as one task
on the event loop. An expired watch (410 Gone) lists again; other errors back off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import httpx2
from lightkube import ApiError, AsyncClient, NotReadyError
from lightkube.models.discovery_v1 import EndpointPort
from lightkube.resources.discovery_v1 import EndpointSlice

from services.gateway.discovery import Update, host_port

_log = logging.getLogger(__name__)
SERVICE_LABEL = "kubernetes.io/service-name"
DEFAULT_PORT_NAME = "grpc"
NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
MAX_RETRY_SECONDS = 30.0


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


def default_client() -> AsyncClient:
    """In-cluster credentials when running in a pod, else the local kubeconfig.

    lightkube's own order (service account, then $KUBECONFIG, then ~/.kube/config);
    it re-reads a rotated service-account token on 401.
    """
    return AsyncClient()


def slice_port(ports: list[EndpointPort] | None, wanted: str | int | None) -> int | None:
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


def slice_addresses(endpoint_slice: EndpointSlice, wanted: str | int | None) -> set[str]:
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


def http_status(exc: BaseException) -> int | None:
    """The HTTP status of a failed call, or of a watch's ERROR event."""
    if isinstance(exc, ApiError) and exc.status is not None:
        return exc.status.code
    if isinstance(exc, httpx2.HTTPStatusError) and exc.response is not None:
        return exc.response.status_code
    return None


class EndpointSliceDiscovery:
    """Lists, then watches, the EndpointSlices of one Service in one namespace."""

    def __init__(
        self,
        target: str,
        update: Update,
        *,
        namespace: str | None = None,
        client: AsyncClient | None = None,
        watch_seconds: int = 60,
        retry_seconds: float = 1.0,
    ) -> None:
        self.service, self.port = parse_target(target)
        self.namespace = namespace or own_namespace()
        self.update = update
        self.watch_seconds = watch_seconds
        self.retry_seconds = retry_seconds
        self._client = client
        self._own_client = client is None
        self._slices: dict[str, set[str]] = {}
        self._listed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self, first_list_timeout: float = 5.0) -> None:
        """Start watching and wait (bounded) for the first listing."""
        self._task = asyncio.create_task(self._run(), name=f"endpointslices-{self.service}")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(first_list_timeout):
                await self._listed.wait()

    async def close(self) -> None:
        """Stop watching and wait for it, then close the client if it is ours."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._own_client and self._client is not None:
            client, self._client = self._client, None
            await client.close()

    def _publish(self) -> None:
        self.update(sorted(set().union(*self._slices.values())) if self._slices else [])

    async def _run(self) -> None:
        version: str | None = None
        pause = self.retry_seconds
        while True:
            try:
                if self._client is None:
                    self._client = default_client()
                if version is None:
                    version = await self._list(self._client)
                    pause = self.retry_seconds
                version = await self._follow(self._client, version)
                continue
            except httpx2.HTTPError as exc:
                status = http_status(exc)
                version = None
                if status == 410:  # the watch is too old: list again
                    continue
                _log.warning("EndpointSlice API error", extra={"status": status, "error": str(exc)})
            except Exception as exc:  # noqa: BLE001 - the watch must outlive any failure
                _log.warning("EndpointSlice watch failed", extra={"error": repr(exc)})
                version = None
            # Errors back off (doubling, capped); a success resets the pause.
            await asyncio.sleep(pause)
            pause = min(pause * 2, max(MAX_RETRY_SECONDS, self.retry_seconds))

    async def _list(self, client: AsyncClient) -> str | None:
        """Replace every slice with the listing; the listing's resourceVersion."""
        listing = client.list(
            EndpointSlice, namespace=self.namespace, labels={SERVICE_LABEL: self.service}
        )
        self._slices = {_name(s): slice_addresses(s, self.port) async for s in listing}
        self._publish()
        self._listed.set()
        try:
            return listing.resourceVersion
        except NotReadyError:  # no resourceVersion: the watch starts from now
            return None

    async def _follow(self, client: AsyncClient, version: str | None) -> str | None:
        """Apply watch events for a while; the last resourceVersion seen.

        lightkube resumes a watch the server ended by itself, but reads without a
        timeout; the bound here ends a connection that died silently.
        """
        events = client.watch(
            EndpointSlice,
            namespace=self.namespace,
            labels={SERVICE_LABEL: self.service},
            server_timeout=self.watch_seconds,
            resource_version=version,
        )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.watch_seconds + 30):
                async for kind, endpoint_slice in events:
                    if endpoint_slice.metadata is not None:
                        version = endpoint_slice.metadata.resourceVersion or version
                    if kind not in ("ADDED", "MODIFIED", "DELETED"):
                        continue  # BOOKMARK: only the resourceVersion moves on
                    name = _name(endpoint_slice)
                    if kind == "DELETED":
                        self._slices.pop(name, None)
                    else:
                        self._slices[name] = slice_addresses(endpoint_slice, self.port)
                    self._publish()
        return version


def _name(endpoint_slice: EndpointSlice) -> str:
    return str(endpoint_slice.metadata.name if endpoint_slice.metadata else "")
