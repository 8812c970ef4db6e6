"""Railyard's exception tree. Each class knows the HTTP status it maps to.

```
RailyardError                    500  unexpected server-side failure
├─ SpecError                     422  unknown field, wrong type, unknown predicate, bad date ...
├─ UnknownWorkflowError          422  train.workflow_name is not registered
├─ DataSourceError               422  path not found, column missing
├─ AuthError                     401  missing or bad token
│  └─ ForbiddenError             403  the caller may not do this
├─ NotFoundError                 404  no such job
├─ ConflictError                 409  e.g. cancel a finished job
├─ PayloadTooLargeError          413  request body over the limit
└─ BackendUnavailableError       503  Ray cluster or database unreachable
```

The API turns every one into ``{"error": {"type", "message", "details"}}``; the SDK turns that
body back into the same class.
"""

from __future__ import annotations

from typing import Any


class RailyardError(Exception):
    """Root of all Railyard errors."""

    status_code: int = 500

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        """The JSON error body."""
        return {"error": {"type": type(self).__name__, "message": self.message,
                          "details": self.details}}


class SpecError(RailyardError):
    """The training spec is invalid; ``details`` lists each problem with its field path."""

    status_code = 422


class UnknownWorkflowError(SpecError):
    """``train.workflow_name`` names no registered workflow."""


class DataSourceError(SpecError):
    """A data source cannot be read as the spec says (missing path, missing column)."""


class AuthError(RailyardError):
    """No or invalid credentials."""

    status_code = 401


class ForbiddenError(AuthError):
    """Valid credentials, but the caller may not do this."""

    status_code = 403


class NotFoundError(RailyardError):
    """No such resource."""

    status_code = 404


class ConflictError(RailyardError):
    """The request conflicts with the resource's state."""

    status_code = 409


class PayloadTooLargeError(RailyardError):
    """The request body is larger than the server accepts."""

    status_code = 413


class BackendUnavailableError(RailyardError):
    """The Ray cluster or the database cannot be reached; retry later."""

    status_code = 503


ERROR_CLASSES: dict[str, type[RailyardError]] = {
    cls.__name__: cls
    for cls in (RailyardError, SpecError, UnknownWorkflowError, DataSourceError, AuthError,
                ForbiddenError, NotFoundError, ConflictError, PayloadTooLargeError,
                BackendUnavailableError)
}
