"""The /v1/jobs routes: submit, list, read, cancel a job, and its events, trials, models,
attempts and logs. Team ownership of ``{job_id}`` is checked by
:func:`serve_app.deps.authorize` before any of them runs."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any, cast

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import PlainTextResponse
from starlette.concurrency import run_in_threadpool

from railyard.control.job_watch import MAX_WAIT_S, JobWatch, state_key
from railyard.control.mlflow_export import export_state, retry_export
from railyard.control.service import JobService
from railyard.errors import SpecError
from railyard.jobstore import jobs
from railyard.jobstore.tables import Job, JobStatus
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
    created = await _in_thread(
        lambda: svc.create(payload, caller=caller, idempotency_key=idempotency_key))
    if created.replayed:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    return await _in_thread(_public, svc, created.job)


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
async def get_job(
        job_id: str, request: Request, svc: Service,
        wait_s: Annotated[float, Query(
            ge=0, le=MAX_WAIT_S, description="long poll: answer once the job's status or "
            "phase is no longer `since`, or it ends, or after this many seconds")] = 0,
        since: Annotated[str | None, Query(
            max_length=80, description="with wait_s: the state last seen, `STATUS` or "
            "`STATUS:PHASE` (default: the job's state now)")] = None) -> JobPublic:
    """A job: status, phases, data stats, metrics, artifacts, spec. With ``wait_s`` the
    answer waits for the job to change (railyard.control.job_watch), so a client waiting for
    a job learns of each change within ~0.1 s without asking again and again."""
    if wait_s > 0:
        if since is None:
            current = await _in_thread(lambda: jobs.get_job(svc.engine, job_id=job_id))
            since = state_key(current.status, current.phase)
        elif since.partition(":")[0] not in JOB_STATUSES:
            raise SpecError(f"since: {since!r} does not start with a job status; send the "
                            "status (and phase) of the job as last read, e.g. RUNNING:train",
                            details=[{"field": "since", "message": "expected STATUS or "
                                      f"STATUS:PHASE, STATUS one of {sorted(JOB_STATUSES)}"}])
        await _job_watch(request, svc).wait(job_id, since, wait_s)
    return await _in_thread(lambda: _public(svc, svc.get(job_id)))


JOB_STATUSES = frozenset(s.value for s in JobStatus)


def _job_watch(request: Request, svc: JobService) -> JobWatch:
    """The app's long-poll waiters, one JobWatch per job database."""
    state = request.app.state
    held = getattr(state, "job_watch", None)
    if held is None or held[0] is not svc.engine:
        state.job_watch = held = (svc.engine, JobWatch(svc.engine))
    return cast(JobWatch, held[1])


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


@router.get("/{job_id}/lineage")
def job_lineage(job_id: str, svc: Service) -> dict[str, Any]:
    """What the job read and ran (railyard.data.lineage): each Parquet source's files with
    size and ETag / version id (mtime for local files), SQL queries as run, the workflow's
    module and source SHA-256, package versions, seeds, the spec hash; ``rerun_of`` and the
    pinned files of a rerun. Empty ``sources`` until the job has planned its read."""
    job = svc.get(job_id)
    lineage = dict(job.lineage or {})
    return {"job_id": job.id, "sources": [], "sql": [], "code": {}, "seeds": {},
            **lineage, "spec_hash": lineage.get("spec_hash", job.spec_hash),
            "rerun_of": job.rerun_of, "pinned": job.pinned_files is not None}


@router.get("/{job_id}/mlflow")
def job_mlflow(job_id: str, svc: Service) -> dict[str, Any]:
    """The job's export to MLflow (railyard.control.mlflow_export): ``status`` pending,
    exported or failed (``none`` while there is no export: MLflow is off, or the job did
    not succeed), its attempts, last error, run id, experiment id and registered version."""
    return export_state(svc.engine, svc.settings, job_id=svc.get(job_id).id)


@router.post("/{job_id}/mlflow/retry", responses=error_responses(409))
def retry_job_mlflow(job_id: str, svc: Service) -> dict[str, Any]:
    """Export the job to MLflow again now: a failed (or waiting) export becomes pending and
    due at once, its attempts counted afresh. 409 when there is nothing to retry: MLflow is
    off, the job has no export (it did not succeed), or it was exported."""
    return retry_export(svc.engine, svc.settings, job_id=svc.get(job_id).id)


@router.post("/{job_id}/rerun", status_code=201, response_model=JobPublic,
             responses=error_responses(403, 409, 422),
             openapi_extra={"requestBody": {"required": False, "content": {
                 "application/json": {"schema": {
                     "type": "object", "additionalProperties": False,
                     "properties": {"allow_changed_data": {"type": "boolean"}}}}}}})
async def rerun_job(job_id: str, request: Request, svc: Service,
                    caller: CurrentCaller) -> JobPublic:
    """Submit the job's spec again as a new job pinned to the files the original read
    (``rerun_of`` names it): a file that changed or vanished since is a 409 naming it, unless
    ``{"allow_changed_data": true}``."""
    from railyard.control.rerun import rerun

    raw = await read_body(request, svc.settings.max_body_bytes)
    payload = _parse_json(raw) if raw.strip() else {}
    if not isinstance(payload, dict) or set(payload) - {"allow_changed_data"} or \
            not isinstance(payload.get("allow_changed_data", False), bool):
        raise SpecError("send {} or {\"allow_changed_data\": true|false}",
                        details=[{"field": "allow_changed_data",
                                  "message": "expected a boolean and no other field"}])
    job = await _in_thread(lambda: rerun(svc, caller=caller, job_id=job_id,
                                         allow_changed_data=payload.get("allow_changed_data",
                                                                        False)))
    return await _in_thread(_public, svc, job)


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


def _public(svc: JobService, job: Job) -> JobPublic:
    """The job as the API shows it, with its timeline (a database read: call it off the
    event loop, as :func:`_in_thread` does)."""
    return to_public(job, jobs.list_events(svc.engine, job_id=job.id))


async def _in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """Run blocking ``fn`` (database and Ray calls) off the event loop."""
    return await run_in_threadpool(fn, *args)
