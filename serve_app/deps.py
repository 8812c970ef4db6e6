"""FastAPI dependencies: the JobService behind the app, and the bearer-token guard on every
route."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

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


def _build_service(request: Request) -> JobService:
    try:
        return request.app.state.service_factory()
    except (SQLAlchemyError, OSError) as exc:
        log.warning("job database unreachable: %s", exc)
        raise BackendUnavailableError("the job database is unreachable; retry shortly") \
            from None


async def get_service(request: Request) -> JobService:
    """FastAPI dependency: the app's JobService. Built once, off the event loop (the first
    call migrates the database); later requests take it from ``app.state`` without a trip
    through the threadpool. A factory swapped onto the app is called again."""
    state = request.app.state
    factory = state.service_factory
    built = getattr(state, "built_service", None)
    if built is not None and built[0] is factory:
        return built[1]
    service = await run_in_threadpool(_build_service, request)
    state.built_service = (factory, service)
    return service


Service = Annotated[JobService, Depends(get_service)]


class TokenCache:
    """Callers of recently checked tokens, by the token's SHA-256, for ``ttl_s`` seconds each
    (at most ``max_entries``; the oldest go first). It spares every request a database
    round-trip; the price is that a revoked token keeps working for up to ``ttl_s`` seconds
    in each API replica that saw it (RAILYARD_TOKEN_CACHE_TTL_S; 0 turns the cache off).
    Only valid tokens are kept."""

    def __init__(self, *, max_entries: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self.clock = clock
        self._entries: dict[str, tuple[float, Caller]] = {}
        self._lock = threading.Lock()

    def get(self, token_hash: str) -> Caller | None:
        with self._lock:
            entry = self._entries.get(token_hash)
            if entry is None:
                return None
            if entry[0] <= self.clock():
                del self._entries[token_hash]
                return None
            return entry[1]

    def put(self, token_hash: str, caller: Caller, ttl_s: float) -> None:
        if ttl_s <= 0:
            return
        with self._lock:
            self._entries.pop(token_hash, None)
            while len(self._entries) >= self.max_entries:
                del self._entries[next(iter(self._entries))]  # insertion order: the oldest
            self._entries[token_hash] = (self.clock() + ttl_s, caller)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def token_cache(request: Request) -> TokenCache | None:
    """The app's token cache: set on ``app.state.token_cache`` where it is wanted (the Ray Serve
    deployment does); an app without one checks every token in the database."""
    return getattr(request.app.state, "token_cache", None)


async def authorize(request: Request, credentials: Annotated[
        HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Caller | None:
    """Every route's guard (an app-wide dependency): the caller behind the bearer token (401
    without a valid one) and, on any route with a ``{job_id}``, a 403 unless the caller's
    team owns the job (404 if there is none). Routes in PUBLIC_PATHS pass without a token.

    Where the app has a :class:`TokenCache` (the Ray Serve deployment), a valid token's caller
    is kept for RAILYARD_TOKEN_CACHE_TTL_S seconds, so most requests reach the database only
    in their route; the database work runs off the event loop."""
    if request.url.path in PUBLIC_PATHS:
        return None
    if credentials is None:
        raise AuthError("no API token: send the header `Authorization: Bearer <token>` (the "
                        "CLI and SDK read RAILYARD_TOKEN or $RAILYARD_HOME/token; an admin "
                        "creates tokens with `railyard token create --team TEAM`)")
    svc = await get_service(request)
    cache = token_cache(request)
    key = tokens.hash_token(credentials.credentials)
    caller = cache.get(key) if cache is not None else None
    if caller is None:
        row = await run_in_threadpool(tokens.authenticate, svc.engine, credentials.credentials)
        if row is None:
            raise AuthError("the API token is not valid or was revoked; ask an admin for a new "
                            "one (`railyard token create --team TEAM`)",
                            details={"reason": "invalid_token"})
        caller = Caller.from_token(row)
        if cache is not None:
            cache.put(key, caller, svc.settings.token_cache_ttl_s)
    job_id = request.path_params.get("job_id")
    if job_id is not None:
        job = await run_in_threadpool(lambda: jobs.get_job(svc.engine, job_id=job_id))
        check_job(caller, job)
    return caller


def current_caller(caller: Annotated[Caller | None, Depends(authorize)]) -> Caller:
    """The authenticated caller of a non-public route."""
    if caller is None:  # only public routes get here without one, and they do not ask
        raise AuthError("this route needs an API token")
    return caller


CurrentCaller = Annotated[Caller, Depends(current_caller)]
