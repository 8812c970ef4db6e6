"""How the API answers errors: every one as ``{"error": {"type", "message", "details"}}``
(:class:`ErrorBody`), with the exception handlers that produce it and the OpenAPI docs of it."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import DataError, SQLAlchemyError

from railyard.errors import BackendUnavailableError, RailyardError, SpecError

log = logging.getLogger(__name__)


class ErrorInfo(BaseModel):
    """One error: its class (as in railyard.errors), what went wrong, and per-field details."""

    type: str = Field(description="RailyardError subclass, e.g. SpecError, NotFoundError")
    message: str
    details: Any = None


class ErrorBody(BaseModel):
    """What every error answer carries: ``{"error": {"type", "message", "details"}}``."""

    error: ErrorInfo


ERROR_MEANINGS = {
    401: "No API token, or one that is not valid (AuthError)",
    403: "The token's team may not do this (ForbiddenError)",
    404: "No such job (NotFoundError)",
    409: "Conflicts with the job's state or an earlier Idempotency-Key (ConflictError)",
    413: "Request body over RAILYARD_MAX_BODY_BYTES (PayloadTooLargeError)",
    422: "Invalid request or spec; details name each field (SpecError)",
    503: "The job database or the Ray cluster is unreachable; retry (BackendUnavailableError)",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the error answers a route can give (all in ErrorBody)."""
    return {code: {"model": ErrorBody, "description": ERROR_MEANINGS[code]} for code in codes}


async def railyard_error_handler(_: Request, exc: RailyardError) -> JSONResponse:
    """A RailyardError at its own status code; a 401 also carries ``WWW-Authenticate``."""
    headers = None
    if exc.status_code == 401:
        invalid = isinstance(exc.details, dict) and exc.details.get("reason")
        headers = {"WWW-Authenticate": 'Bearer realm="railyard"'
                   + (', error="invalid_token"' if invalid else "")}
    return JSONResponse(exc.to_dict(), status_code=exc.status_code, headers=headers)


async def request_validation_handler(_: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's request validation errors as a 422 SpecError naming each field."""
    problems = [{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
                for e in exc.errors()]
    err = SpecError("invalid request: " + "; ".join(
        f"{p['field']}: {p['message']}" for p in problems), details=problems)
    return JSONResponse(err.to_dict(), status_code=422)


async def database_error_handler(_: Request, exc: SQLAlchemyError) -> JSONResponse:
    """A database error: 422 for a value the database refuses, otherwise 503 (retry)."""
    log.warning("database error: %s", exc)
    if isinstance(exc, DataError):
        # The database refused a value the request carried (Postgres: a NUL character in
        # a text field, say): bad input, not an outage — retrying it would never help.
        reason = str(exc.orig).splitlines()[0] if exc.orig else type(exc).__name__
        err = SpecError(f"the job database refuses a value in this request: {reason}; "
                        "remove NUL (\\u0000) characters and send it again",
                        details=[{"field": "(request)", "message": reason}])
        return JSONResponse(err.to_dict(), status_code=422)
    unavailable = BackendUnavailableError("the job database is unavailable; retry shortly")
    return JSONResponse(unavailable.to_dict(), status_code=503)


def install_exception_handlers(app: FastAPI) -> None:
    """Answer RailyardError, request validation and database errors as :class:`ErrorBody`."""
    app.exception_handler(RailyardError)(railyard_error_handler)
    app.exception_handler(RequestValidationError)(request_validation_handler)
    app.exception_handler(SQLAlchemyError)(database_error_handler)
