"""The REST API as a FastAPI app. Importable without a running Ray; the Ray Serve deployment in
serve_app/deployment.py wraps it."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from sqlalchemy import text
from sqlalchemy.exc import DataError, SQLAlchemyError

from railyard.jobstore import jobs

from railyard.jobstore import tokens
from railyard.control.access import Caller, check_job
from railyard.control.backend import JobBackend, RayJobsBackend
from railyard.config import Settings, get_settings
from railyard.jobstore.engine import get_engine, migrate
from railyard.errors import (AuthError, BackendUnavailableError, PayloadTooLargeError,
                             RailyardError, SpecError)
from railyard.jobstore.tables import AttemptPublic, EventPublic, JobList, JobPublic, JobStatus
from railyard.control.service import JobService
from railyard.spec import TrainingSpec
from railyard.training.workflow import available_workflows

log = logging.getLogger(__name__)

ServiceFactory = Callable[[], JobService]


def default_service_factory(settings: Settings | None = None,
                            backend: JobBackend | None = None) -> ServiceFactory:
    """Build the JobService from settings on first use (migrating the database once). A
    failure (database down) leaves nothing behind: the next request tries again."""
    lock = threading.Lock()
    holder: dict[str, JobService] = {}

    def factory() -> JobService:
        with lock:
            if "service" not in holder:
                cfg = settings or get_settings()
                migrate(cfg.resolved_database_url)
                holder["service"] = JobService(
                    engine=get_engine(cfg.resolved_database_url),
                    backend=backend or RayJobsBackend(cfg.ray_address), settings=cfg)
            return holder["service"]

    return factory


def get_service(request: Request) -> JobService:
    """FastAPI dependency: the app's JobService."""
    try:
        return request.app.state.service_factory()
    except (SQLAlchemyError, OSError) as exc:
        log.warning("job database unreachable: %s", exc)
        raise BackendUnavailableError("the job database is unreachable; retry shortly") \
            from None


Service = Annotated[JobService, Depends(get_service)]

PUBLIC_PATHS = frozenset({"/healthz"})  # /docs and /openapi.json are not API routes: open too
bearer = HTTPBearer(auto_error=False, description="An API token (`railyard token create`).")


def authorize(request: Request, credentials: Annotated[
        HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Caller | None:
    """Every route's guard (an app-wide dependency): the caller behind the bearer token (401
    without a valid one) and, on any route with a ``{job_id}``, a 403 unless the caller's
    team owns the job (404 if there is none). Routes in PUBLIC_PATHS pass without a token."""
    if request.url.path in PUBLIC_PATHS:
        return None
    if credentials is None:
        raise AuthError("no API token: send the header `Authorization: Bearer <token>` (the "
                        "CLI and SDK read RAILYARD_TOKEN or $RAILYARD_HOME/token; an admin "
                        "creates tokens with `railyard token create --team TEAM`)")
    svc = get_service(request)
    row = tokens.authenticate(svc.engine, credentials.credentials)
    if row is None:
        raise AuthError("the API token is not valid or was revoked; ask an admin for a new "
                        "one (`railyard token create --team TEAM`)",
                        details={"reason": "invalid_token"})
    caller = Caller.from_token(row)
    job_id = request.path_params.get("job_id")
    if job_id is not None:
        check_job(caller, jobs.get_job(svc.engine, job_id=job_id))
    return caller


def current_caller(caller: Annotated[Caller | None, Depends(authorize)]) -> Caller:
    """The authenticated caller of a non-public route."""
    if caller is None:  # only public routes get here without one, and they do not ask
        raise AuthError("this route needs an API token")
    return caller


CurrentCaller = Annotated[Caller, Depends(current_caller)]


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


def create_app(service_factory: ServiceFactory | None = None) -> FastAPI:
    """The Railyard API. Pass a factory to swap the database or backend (tests do)."""
    app = FastAPI(title="Railyard", version="0.1.0",
                  description="Send a training spec; get a tracked job, a model, metrics, logs.",
                  dependencies=[Depends(authorize)])
    app.state.service_factory = service_factory or default_service_factory()

    @app.exception_handler(RailyardError)
    async def _railyard_error(_: Request, exc: RailyardError) -> JSONResponse:
        headers = None
        if exc.status_code == 401:
            invalid = isinstance(exc.details, dict) and exc.details.get("reason")
            headers = {"WWW-Authenticate": 'Bearer realm="railyard"'
                       + (', error="invalid_token"' if invalid else "")}
        return JSONResponse(exc.to_dict(), status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _request_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
                    for e in exc.errors()]
        err = SpecError("invalid request: " + "; ".join(
            f"{p['field']}: {p['message']}" for p in problems), details=problems)
        return JSONResponse(err.to_dict(), status_code=422)

    @app.exception_handler(SQLAlchemyError)
    async def _db_error(_: Request, exc: SQLAlchemyError) -> JSONResponse:
        log.warning("database error: %s", exc)
        if isinstance(exc, DataError):
            # The database refused a value the request carried (Postgres: a NUL character in
            # a text field, say): bad input, not an outage — retrying it would never help.
            reason = str(exc.orig).splitlines()[0] if exc.orig else type(exc).__name__
            err = SpecError(f"the job database refuses a value in this request: {reason}; "
                            "remove NUL (\\u0000) characters and send it again",
                            details=[{"field": "(request)", "message": reason}])
            return JSONResponse(err.to_dict(), status_code=422)
        err = BackendUnavailableError("the job database is unavailable; retry shortly")
        return JSONResponse(err.to_dict(), status_code=503)

    @app.get("/healthz")
    def healthz(svc: Service) -> dict[str, str]:
        """Liveness and database reachability."""
        with svc.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return {"status": "ok"}

    @app.post("/v1/jobs", status_code=201, response_model=JobPublic,
              responses={200: {"model": JobPublic, "description": "An Idempotency-Key "
                                                                  "replay: the first job"},
                         **error_responses(403, 409, 413)},
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": {"$ref": "#/components/schemas/TrainingSpec"}}}}})
    async def create_job(request: Request, response: Response, svc: Service,
                         caller: CurrentCaller,
                         idempotency_key: Annotated[str | None, Header()] = None) -> JobPublic:
        """Validate a training spec, store the job and submit it to Ray (or keep it QUEUED
        while the owner's team is at its concurrency limit). With an ``Idempotency-Key``
        header, a repeat with the same body answers 200 with the first job
        (``Idempotent-Replayed: true``); the same key with another body is a 409."""
        payload = _parse_json(await _read_body(request, svc.settings.max_body_bytes))
        job, replayed = await _in_thread(
            lambda: svc.create(payload, caller=caller, idempotency_key=idempotency_key))
        if replayed:
            response.status_code = 200
            response.headers["Idempotent-Replayed"] = "true"
        return jobs.to_public(job, jobs.list_events(svc.engine, job_id=job.id))

    @app.get("/v1/jobs", response_model=JobList, responses=error_responses(403))
    def list_jobs(svc: Service, caller: CurrentCaller, owner: str | None = None,
                  project: str | None = None, status: JobStatus | None = None,
                  limit: Annotated[int, Query(ge=1, le=200)] = 50,
                  cursor: str | None = None) -> JobList:
        """Jobs, newest first; follow ``next_cursor`` for more. A team token lists its own
        team's jobs only (``owner`` of another team is a 403); an admin token lists all."""
        page, next_cursor = svc.list_jobs(caller=caller, owner=owner, project=project,
                                          status=status, limit=limit, cursor=cursor)
        return JobList(jobs=[jobs.to_public(j, jobs.list_events(svc.engine, job_id=j.id))
                             for j in page], next_cursor=next_cursor)

    @app.get("/v1/jobs/{job_id}", response_model=JobPublic)
    def get_job(job_id: str, svc: Service) -> JobPublic:
        """A job: status, phases, data stats, metrics, artifacts, spec."""
        job = svc.get(job_id)
        return jobs.to_public(job, jobs.list_events(svc.engine, job_id=job.id))

    @app.get("/v1/jobs/{job_id}/events", response_model=list[EventPublic])
    def job_events(job_id: str, svc: Service) -> list[EventPublic]:
        """The job's timeline, oldest first."""
        jobs.get_job(svc.engine, job_id=job_id)
        return [jobs.to_event_public(e) for e in jobs.list_events(svc.engine, job_id=job_id)]

    @app.get("/v1/jobs/{job_id}/trials")
    def job_trials(job_id: str, svc: Service) -> list[dict[str, Any]]:
        """A sweep's trials: params, metrics, status (SUCCEEDED, STOPPED, FAILED), duration,
        error; empty for a job without ``train.tune``."""
        jobs.get_job(svc.engine, job_id=job_id)
        return jobs.list_trials(svc.engine, job_id=job_id)

    @app.get("/v1/jobs/{job_id}/models")
    def job_models(job_id: str, svc: Service) -> list[dict[str, Any]]:
        """A fan-out job's models, one per partition value: metrics, artifact, status."""
        jobs.get_job(svc.engine, job_id=job_id)
        return jobs.list_partition_models(svc.engine, job_id=job_id)

    @app.get("/v1/jobs/{job_id}/attempts", response_model=list[AttemptPublic])
    def job_attempts(job_id: str, svc: Service) -> list[AttemptPublic]:
        """Every attempt of the job, numbered from 1: its Ray submission, outcome, failure
        kind (infrastructure or user_code), error and phase."""
        return [jobs.to_attempt_public(a) for a in svc.attempts(job_id)]

    @app.post("/v1/jobs/{job_id}/cancel", response_model=JobPublic,
              responses=error_responses(409))
    def cancel_job(job_id: str, svc: Service) -> JobPublic:
        """Cancel a QUEUED, PENDING or RUNNING job; 409 for a finished one."""
        job = svc.cancel(job_id)
        return jobs.to_public(job, jobs.list_events(svc.engine, job_id=job.id))

    @app.get("/v1/jobs/{job_id}/logs", response_class=PlainTextResponse)
    def job_logs(job_id: str, svc: Service,
                 attempt: Annotated[int | None, Query(ge=1)] = None,
                 offset: Annotated[int, Query(ge=0)] = 0) -> PlainTextResponse:
        """An attempt's log (default: the latest) as text from byte ``offset`` on; it streams
        while the job runs. ``X-Log-Size`` is the whole log's size in bytes (a follower's next
        offset), ``X-Log-Source`` the copy it came from, ``X-Job-Status`` the job's status as
        it was before the read (a follower reads once more after it turns terminal)."""
        job = svc.get(job_id)
        text = svc.logs(job_id, attempt=attempt, offset=offset)
        size = getattr(text, "size", len(text.encode()))
        return PlainTextResponse(text, headers={
            "X-Log-Size": str(size), "X-Log-Source": getattr(text, "source", "unknown"),
            "X-Job-Status": job.status})

    @app.get("/v1/workflows")
    def workflows() -> list[dict[str, Any]]:
        """Registered workflows and the hyperparameters each accepts."""
        return [{"name": name, "framework": cls.framework, "doc": (cls.__doc__ or "").strip(),
                 "derived_columns": sorted(cls.derived_columns),
                 "params": sorted(cls.param_names())}
                for name, cls in available_workflows().items()]

    _document_spec_schema(app)
    return app


def _document_spec_schema(app: FastAPI) -> None:
    """POST /v1/jobs reads its body by hand (for size limits and our error format); put the
    TrainingSpec schema into the OpenAPI components so clients and fuzzers still see it. Also
    document the error answers every route can give (see :func:`_document_errors`)."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (TrainingSpec, ErrorBody):
            model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(model_schema.pop("$defs", {}))
            components[model.__name__] = model_schema
        _document_errors(schema)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _document_errors(schema: dict[str, Any]) -> None:
    """Every route can answer 503 (database down); every route but the public ones 401 (no or
    bad token), and the public ones need no token (``security: []``); every ``{job_id}`` route
    403 and 404 (:func:`authorize` checks the job's team). FastAPI's own 422 schema
    (``{"detail": [...]}``) is replaced by ours: the handler above answers every error as
    :class:`ErrorBody`."""
    for path, operations in schema.get("paths", {}).items():
        public = path in PUBLIC_PATHS
        codes = {503} | (set() if public else {401}) \
            | ({403, 404} if "{job_id}" in path else set())
        for operation in operations.values():
            if public:
                operation["security"] = []
            responses = operation.setdefault("responses", {})
            for code in sorted(codes | ({422} if "422" in responses else set())):
                responses[str(code)] = {"description": ERROR_MEANINGS[code], "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
    components = schema.get("components", {}).get("schemas", {})
    if "HTTPValidationError" not in json.dumps(schema.get("paths", {})):
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"request body is {declared} bytes; the limit is {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise PayloadTooLargeError(f"request body is over the limit of {limit} bytes")
    return bytes(body)


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"request body is not valid JSON: {exc}; send the training spec as a "
                        "JSON object", details=[{"field": "(body)", "message": str(exc)}]) \
            from None


async def _in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(fn, *args)
