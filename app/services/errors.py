"""Errors a service raises for the client: each carries its HTTP status and error code.

The API renders every one of them as ``{"error": {"code", "message", "detail"}}``.
"""

from __future__ import annotations

from typing import Any

from app.jobs.errors import MissingError, NotReadyError, UsageError


class ServiceError(Exception):
    """Base class: a request that cannot be served as asked."""

    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        if code is not None:
            self.code = code


class NotFoundError(ServiceError):
    status_code = 404
    code = "not_found"


class ConflictError(ServiceError):
    status_code = 409
    code = "conflict"


class InvalidInputError(ServiceError):
    status_code = 422
    code = "invalid_input"


class PayloadTooLargeError(ServiceError):
    status_code = 413
    code = "too_large"


def refused(error: UsageError) -> ServiceError:
    """The client's error for input a job layer refused: a missing reference is 404, a
    state that does not allow it yet 409, anything else bad input (422)."""
    kind = (NotFoundError if isinstance(error, MissingError)
            else ConflictError if isinstance(error, NotReadyError) else InvalidInputError)
    return kind(str(error), code=error.code)
