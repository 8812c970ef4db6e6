"""FastAPI dependencies: the JobService behind the app, and the bearer-token guard on every
route."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import SQLAlchemyError

from railyard.config import Settings, get_settings
from railyard.control.access import Caller, check_job
from railyard.control.backend import JobBackend, RayJobsBackend
from railyard.control.service import JobService
from railyard.errors import AuthError, BackendUnavailableError
from railyard.jobstore import jobs, tokens
from railyard.jobstore.engine import get_engine, migrate

log = logging.getLogger(__name__)

ServiceFactory = Callable[[], JobService]

PUBLIC_PATHS = frozenset({"/healthz"})  # /docs and /openapi.json are not API routes: open too
bearer = HTTPBearer(auto_error=False, description="An API token (`railyard token create`).")


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
                    backend=backend or RayJobsBackend(
                        cfg.ray_address, request_timeout_s=cfg.ray_request_timeout_s),
                    settings=cfg)
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
