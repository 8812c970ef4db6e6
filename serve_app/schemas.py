"""The API's read schemas (what the routes return) and the conversions from job-store rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlmodel import SQLModel

from railyard.jobstore.jobs import as_utc
from railyard.jobstore.tables import PHASES, Job, JobAttempt, JobEvent, JobStatus


class AttemptPublic(SQLModel):
    """One attempt as the API returns it."""

    attempt: int
    ray_submission_id: str | None
    status: str
    failure_kind: str | None = None
    error: str | None = None
    error_phase: str | None = None
    started_at: datetime
    finished_at: datetime | None = None


class PhasePublic(SQLModel):
    """One phase of a job's run."""

    name: str
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_s: float | None = None


class EventPublic(SQLModel):
    """One timeline entry."""

    at: datetime
    kind: str
    phase: str | None = None
    message: str | None = None


class DatasetPublic(SQLModel):
    """Row counts of the prepared data."""

    train_rows: int | None = None
    holdout_rows: int | None = None
    stats: dict[str, Any] = {}


class JobPublic(SQLModel):
    """A job as the API returns it."""

    id: str
    status: JobStatus
    phase: str | None
    owner: str
    project: str
    trainer: str
    model_name: str
    model_description: str
    workflow_name: str
    origin: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    error_phase: str | None
    dataset: DatasetPublic
    metrics: dict[str, Any]
    artifacts: dict[str, Any]
    phases: list[PhasePublic]
    ray_submission_id: str | None
    pool: str | None = None
    placement_reason: str | None = None
    status_reason: str | None = None
    submitted_by: str | None = None
    attempt: int = 1
    rerun_of: str | None = None     # the job this one reruns (POST /v1/jobs/{id}/rerun)
    spec: dict[str, Any]


class JobList(SQLModel):
    """A page of jobs, newest first; pass ``next_cursor`` back as ``cursor`` for the next page."""

    jobs: list[JobPublic]
    next_cursor: str | None = None


# The only event kinds phases_from_events reads: a list page loads just these.
PHASE_EVENT_KINDS = ("attempt_started", "phase_started", "phase_finished")


def phases_from_events(events: list[JobEvent]) -> list[PhasePublic]:
    """Fold phase start/finish events into one entry per phase, in run order."""
    phases: dict[str, PhasePublic] = {}
    for ev in events:
        if ev.kind == "attempt_started":
            phases.clear()           # the timeline's phases are those of the latest attempt
            continue
        if ev.phase is None or ev.kind not in ("phase_started", "phase_finished"):
            continue
        entry = phases.setdefault(ev.phase, PhasePublic(name=ev.phase))
        if ev.kind == "phase_started":
            entry.started_at = as_utc(ev.at)
        else:
            entry.finished_at = as_utc(ev.at)
    for entry in phases.values():
        if entry.started_at and entry.finished_at:
            entry.duration_s = round((entry.finished_at - entry.started_at).total_seconds(), 3)
    order = {name: i for i, name in enumerate(PHASES)}
    return sorted(phases.values(), key=lambda p: order.get(p.name, len(order)))


def to_public(job: Job, events: list[JobEvent]) -> JobPublic:
    """The API view of a job."""
    return JobPublic(
        id=job.id, status=JobStatus(job.status), phase=job.phase, owner=job.owner,
        project=job.project, trainer=job.trainer, model_name=job.model_name,
        model_description=job.model_description, workflow_name=job.workflow_name,
        origin=job.origin, created_at=as_utc(job.created_at),
        started_at=as_utc(job.started_at), finished_at=as_utc(job.finished_at),
        error=job.error, error_phase=job.error_phase,
        dataset=DatasetPublic(train_rows=job.train_rows, holdout_rows=job.holdout_rows,
                              stats=job.dataset_stats or {}),
        metrics=job.metrics or {}, artifacts=job.artifacts or {},
        phases=phases_from_events(events), ray_submission_id=job.ray_submission_id,
        pool=job.pool, placement_reason=job.placement_reason, status_reason=job.status_reason,
        submitted_by=job.submitted_by, attempt=job.attempt or 1, spec=job.spec,
        rerun_of=getattr(job, "rerun_of", None),
    )


def to_job_list(page: list[Job], next_cursor: str | None,
                events: dict[str, list[JobEvent]]) -> JobList:
    """The API view of a list page, given every listed job's events in one mapping (loaded
    in one query: ``jobs.list_events_for``)."""
    return JobList(jobs=[to_public(job, events.get(job.id, [])) for job in page],
                   next_cursor=next_cursor)


def to_event_public(ev: JobEvent) -> EventPublic:
    """The API view of a timeline entry."""
    return EventPublic(at=as_utc(ev.at), kind=ev.kind, phase=ev.phase, message=ev.message)


def to_attempt_public(attempt: JobAttempt) -> AttemptPublic:
    """The API view of an attempt."""
    return AttemptPublic(attempt=attempt.attempt, ray_submission_id=attempt.ray_submission_id,
                         status=attempt.status, failure_kind=attempt.failure_kind,
                         error=attempt.error, error_phase=attempt.error_phase,
                         started_at=as_utc(attempt.started_at),
                         finished_at=as_utc(attempt.finished_at))


class TeamQuotaPublic(SQLModel):
    """A team's quota: the limits in force (0: no limit), the admin's override of each (None:
    the server's RAILYARD_MAX_CONCURRENT_JOBS_PER_TEAM / RAILYARD_MAX_CPUS_PER_TEAM), and what
    the team's jobs use now."""

    team: str
    max_jobs: int
    max_cpus: float
    override_max_jobs: int | None = None
    override_max_cpus: float | None = None
    jobs_on_ray: int
    cpus_on_ray: float
    queued: int
    updated_at: datetime | None = None
    updated_by: str | None = None


class TeamQuotaUpdate(BaseModel):
    """The body of ``PUT /v1/teams/{team}/quota``: both limits (0: no limit; null: the server's
    default)."""

    model_config = ConfigDict(extra="forbid")

    max_jobs: int | None = None
    max_cpus: float | None = None


class QueuedJobPublic(SQLModel):
    """A queued job's place: ``position`` among all the pool's queued jobs (1 goes next)."""

    job_id: str
    owner: str
    priority: int
    position: int
    created_at: datetime
    reason: str | None = None


class PoolQueuePublic(SQLModel):
    """One pool's queue: how many jobs wait in it, and those the caller may see, in order."""

    pool: str
    queued: int
    jobs: list[QueuedJobPublic]


class QueuePublic(SQLModel):
    """The queue, per pool (``GET /v1/queue``)."""

    pools: list[PoolQueuePublic]


class WebhookCreate(BaseModel):
    """The body of ``POST /v1/webhooks``: where to send which events of the jobs of ``owner``
    (a team token: its own team, the default; an admin token: any team, or leave it out for
    every team's), and the signing secret (16-256 characters; left out: the server makes one
    and returns it this once)."""

    model_config = ConfigDict(extra="forbid")

    url: str
    events: list[str]
    secret: str | None = None
    owner: str | None = None


class WebhookPublic(SQLModel):
    """A registered webhook (never its secret)."""

    id: str
    url: str
    events: list[str]
    owner: str | None = None
    created_by: str
    created_at: datetime


class WebhookCreated(WebhookPublic):
    """The answer to ``POST /v1/webhooks``: ``secret`` only when the server generated it."""

    secret: str | None = None


class WebhookList(SQLModel):
    """The caller's webhooks (an admin: every one)."""

    webhooks: list[WebhookPublic]


class WebhookAttemptPublic(SQLModel):
    """One HTTP attempt of a delivery."""

    at: datetime
    http_status: int | None = None
    error: str | None = None
    duration_ms: float | None = None
    next_retry_at: datetime | None = None


class WebhookDeliveryPublic(SQLModel):
    """One event owed to an endpoint: ``pending`` (``next_attempt_at`` says when),
    ``delivered`` or ``failed`` (retries ran out), with every attempt."""

    id: int
    event_id: str
    event_type: str
    job_id: str
    status: str
    created_at: datetime
    next_attempt_at: datetime | None = None
    attempts: list[WebhookAttemptPublic]


class WebhookDeliveryList(SQLModel):
    """An endpoint's deliveries, newest first."""

    deliveries: list[WebhookDeliveryPublic]
