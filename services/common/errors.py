"""The one error hierarchy: each error names the gRPC status (and HTTP status) it maps to.

Application code raises these without importing grpc; the server interceptor in
`services.common.interceptor` is the single place that turns them into statuses,
and `error_from_rpc` the single place that turns a failed call's status back.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol


class ServiceError(Exception):
    """Base of every error a client may see; `status` is a grpc.StatusCode name."""

    status: ClassVar[str] = "UNKNOWN"
    # The HTTP front end's status for it (499: nginx's "client closed request").
    http_status: ClassVar[int] = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(ServiceError):
    """The request itself is wrong (names, types, shapes, contents)."""

    status = "INVALID_ARGUMENT"
    http_status = 400


class NotFound(ServiceError):
    """A named model, version, alias or object does not exist."""

    status = "NOT_FOUND"
    http_status = 404


class AlreadyExists(ServiceError):
    """The object to create exists already."""

    status = "ALREADY_EXISTS"
    http_status = 409


class FailedPrecondition(ServiceError):
    """The system is not in a state that allows the operation."""

    status = "FAILED_PRECONDITION"
    http_status = 412


class Unavailable(ServiceError):
    """Temporarily unable to serve (model not ready, unloading, draining)."""

    status = "UNAVAILABLE"
    http_status = 503


class ResourceExhausted(ServiceError):
    """A limit was hit: queue full, message too large, rate limit."""

    status = "RESOURCE_EXHAUSTED"
    http_status = 429

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        # Seconds until a retry can succeed, when the limit knows (HTTP's Retry-After).
        self.retry_after = retry_after


class DeadlineExceeded(ServiceError):
    """The caller's deadline passed before the work could run."""

    status = "DEADLINE_EXCEEDED"
    http_status = 504


class Cancelled(ServiceError):
    """The caller went away."""

    status = "CANCELLED"
    http_status = 499


class Unauthenticated(ServiceError):
    """No credentials, or credentials that match nothing."""

    status = "UNAUTHENTICATED"
    http_status = 401


class PermissionDenied(ServiceError):
    """Valid credentials without the right to do this."""

    status = "PERMISSION_DENIED"
    http_status = 403


class Unimplemented(ServiceError):
    """The operation is not supported by this server."""

    status = "UNIMPLEMENTED"
    http_status = 501


class Aborted(ServiceError):
    """A concurrent change conflicted; the caller may retry."""

    status = "ABORTED"
    http_status = 409


class Internal(ServiceError):
    """An invariant broke; the message is fixed so internals never leak."""

    status = "INTERNAL"
    http_status = 500


class RpcFailure(Protocol):
    """What a failed call tells (grpc.aio.AioRpcError does): its status code and details."""

    def code(self) -> Any: ...

    def details(self) -> str | None: ...


def error_from_status(status: str, details: str | None) -> ServiceError:
    """The ServiceError subclass for a status code's name, carrying the details."""
    # Looked up per call: subclasses defined in other modules (DATA_LOSS) count too.
    for cls in ServiceError.__subclasses__():
        if cls.status == status:
            return cls(details or status)
    return ServiceError(f"{status}: {details}")


def error_from_rpc(exc: RpcFailure) -> ServiceError:
    """The ServiceError matching a failed call's status (the one client-side mapping)."""
    code = exc.code()
    return error_from_status(getattr(code, "name", "UNKNOWN"), exc.details())
