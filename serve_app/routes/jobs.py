"""The /v1/jobs routes: submit, list, read, cancel a job, and its events, trials, models,
attempts and logs. Team ownership of ``{job_id}`` is checked by
:func:`serve_app.deps.authorize` before any of them runs."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import PlainTextResponse
from starlette.concurrency import run_in_threadpool

from railyard.errors import SpecError
from railyard.jobstore import jobs
from railyard.jobstore.tables import JobStatus
from serve_app.deps import CurrentCaller, Service
from serve_app.errors import error_responses
from serve_app.json_body import read_body
from serve_app.schemas import (
    PHASE_EVENT_KINDS,
    AttemptPublic,
    EventPublic,
    JobList,
    JobPublic,
    to_attempt_public,
    to_event_public,
    to_job_list,
    to_public,
)

router = APIRouter(prefix="/v1/jobs")


@router.post("", status_code=201, response_model=JobPublic,
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
    payload = _parse_json(await read_body(request, svc.settings.max_body_bytes))
    job, replayed = await _in_thread(
        lambda: svc.create(payload, caller=caller, idempotency_key=idempotency_key))
    if replayed:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    return to_public(job, jobs.list_events(svc.engine, job_id=job.id))


@router.get("", response_model=JobList, responses=error_responses(403))
def list_jobs(svc: Service, caller: CurrentCaller, owner: str | None = None,
              project: str | None = None, status: JobStatus | None = None,
              limit: Annotated[int, Query(ge=1, le=200)] = 50,
              cursor: str | None = None) -> JobList:
    """Jobs, newest first; follow ``next_cursor`` for more. A team token lists its own
    team's jobs only (``owner`` of another team is a 403); an admin token lists all."""
    page, next_cursor = svc.list_jobs(caller=caller, owner=owner, project=project,
                                      status=status, limit=limit, cursor=cursor)
    return to_job_list(page, next_cursor,
                       jobs.list_events_for(svc.engine, job_ids=[j.id for j in page],
                                            kinds=PHASE_EVENT_KINDS))


@router.get("/{job_id}", response_model=JobPublic)
def get_job(job_id: str, svc: Service) -> JobPublic:
    """A job: status, phases, data stats, metrics, artifacts, spec."""
    job = svc.get(job_id)
    return to_public(job, jobs.list_events(svc.engine, job_id=job.id))


@router.get("/{job_id}/events", response_model=list[EventPublic])
def job_events(job_id: str, svc: Service) -> list[EventPublic]:
    """The job's timeline, oldest first."""
    jobs.get_job(svc.engine, job_id=job_id)
    return [to_event_public(e) for e in jobs.list_events(svc.engine, job_id=job_id)]


@router.get("/{job_id}/trials")
def job_trials(job_id: str, svc: Service) -> list[dict[str, Any]]:
    """A sweep's trials: params, metrics, status (SUCCEEDED, STOPPED, FAILED), duration,
    error; empty for a job without ``train.tune``."""
    jobs.get_job(svc.engine, job_id=job_id)
    return jobs.list_trials(svc.engine, job_id=job_id)


@router.get("/{job_id}/models")
def job_models(job_id: str, svc: Service) -> list[dict[str, Any]]:
    """A fan-out job's models, one per partition value: metrics, artifact, status."""
    jobs.get_job(svc.engine, job_id=job_id)
    return jobs.list_partition_models(svc.engine, job_id=job_id)


@router.get("/{job_id}/attempts", response_model=list[AttemptPublic])
def job_attempts(job_id: str, svc: Service) -> list[AttemptPublic]:
    """Every attempt of the job, numbered from 1: its Ray submission, outcome, failure
    kind (infrastructure or user_code), error and phase."""
    return [to_attempt_public(a) for a in svc.attempts(job_id)]


@router.post("/{job_id}/cancel", response_model=JobPublic, responses=error_responses(409))
def cancel_job(job_id: str, svc: Service) -> JobPublic:
    """Cancel a QUEUED, PENDING or RUNNING job; 409 for a finished one."""
    job = svc.cancel(job_id)
    return to_public(job, jobs.list_events(svc.engine, job_id=job.id))


@router.get("/{job_id}/logs", response_class=PlainTextResponse)
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


def _parse_json(body: bytes) -> Any:
    """The body as JSON, or a 422 SpecError."""
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"request body is not valid JSON: {exc}; send the training spec as a "
                        "JSON object", details=[{"field": "(body)", "message": str(exc)}]) \
            from None


async def _in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """Run blocking ``fn`` (database and Ray calls) off the event loop."""
    return await run_in_threadpool(fn, *args)
