"""The HTTP error mapping: each error class's http_status, KServe's body, the headers."""

from __future__ import annotations

import logging

import orjson
import pytest
from starlette.exceptions import HTTPException

from services.common import errors
from services.gateway.http.errors import BodyTooLarge, error_response

EXPECTED = {
    errors.InvalidArgument: 400,
    errors.Unauthenticated: 401,
    errors.PermissionDenied: 403,
    errors.NotFound: 404,
    errors.AlreadyExists: 409,
    errors.Aborted: 409,
    errors.FailedPrecondition: 412,
    BodyTooLarge: 413,
    errors.ResourceExhausted: 429,
    errors.Cancelled: 499,
    errors.Internal: 500,
    errors.ServiceError: 500,
    errors.Unimplemented: 501,
    errors.Unavailable: 503,
    errors.DeadlineExceeded: 504,
}


def test_every_error_class_has_a_status() -> None:
    """A new ServiceError class gets a status here too (or inherits 500 on purpose)."""
    own = [c for c in errors.ServiceError.__subclasses__() if c.__module__ == errors.__name__]
    for cls in own:
        assert cls in EXPECTED, f"{cls.__name__} has no expected HTTP status"


@pytest.mark.parametrize(("cls", "status"), EXPECTED.items(), ids=lambda v: str(v))
def test_status_and_body(cls: type[errors.ServiceError], status: int) -> None:
    response = error_response(cls("what went wrong"))
    assert response.status_code == status
    assert response.media_type == "application/json"
    assert orjson.loads(bytes(response.body)) == {"error": "what went wrong"}


def test_unauthenticated_names_the_scheme_and_limits_say_when_to_retry() -> None:
    assert error_response(errors.Unauthenticated("x")).headers["www-authenticate"] == "Bearer"
    assert error_response(errors.ResourceExhausted("x")).headers["retry-after"] == "1"
    limited = errors.ResourceExhausted("x", retry_after=2.5)
    assert error_response(limited).headers["retry-after"] == "3"
    soon = errors.ResourceExhausted("x", retry_after=0.01)
    assert error_response(soon).headers["retry-after"] == "1"
    assert "retry-after" not in error_response(BodyTooLarge("x")).headers


def test_starlette_errors_keep_their_status() -> None:
    response = error_response(HTTPException(405, "Method Not Allowed"))
    assert response.status_code == 405
    assert orjson.loads(bytes(response.body)) == {"error": "Method Not Allowed"}


def test_unexpected_errors_are_a_fixed_500_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        response = error_response(KeyError("/srv/secret/path"))
    assert response.status_code == 500
    assert orjson.loads(bytes(response.body)) == {"error": "internal error"}
    assert caplog.records and caplog.records[0].exc_info is not None
