"""Keyword-only CRUD over jobs and their timeline. Status changes are guarded: a terminal job
never changes again, so a late runner write cannot turn a CANCELLED job into SUCCEEDED."""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, overload

from sqlalchemy import and_, bindparam, delete, not_, tuple_, update
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from railyard.errors import NotFoundError, SpecError
from railyard.jobstore.engine import session_scope
from railyard.jobstore.tables import (
    ACTIVE_STATUSES,
    TERMINAL_STATUSES,
    FailureKind,
    Job,
    JobAttempt,
    JobEvent,
    JobStatus,
    utcnow,
)
from railyard.jobstore.webhooks import WEBHOOK_EVENT_TYPES, outbox_event
from railyard.spec import TrainingSpec


def new_job_id() -> str:
    """A fresh job id: ``job-`` and 20 hex digits."""
    return "job-" + uuid.uuid4().hex[:20]


def submission_id_for(job_id: str, attempt: int = 1) -> str:
    """The Ray submission id of a job's attempt (deterministic, so Ray refuses a second
    submit of the same attempt)."""
    return f"railyard-{job_id}" if attempt <= 1 else f"railyard-{job_id}-attempt-{attempt}"


PACK_PREFIX = "railyard-pack-"


def pack_submission_id(members: list[tuple[str, int]]) -> str:
    """The Ray submission id of a pack: one Ray job running several jobs' attempts
    (``(job id, attempt)`` pairs), deterministic like ``submission_id_for``."""
    digest = hashlib.sha256(
        ",".join(f"{job_id}:{attempt}" for job_id, attempt in sorted(members)).encode())
    return PACK_PREFIX + digest.hexdigest()[:20]


def is_pack(submission_id: str | None) -> bool:
    """True for the submission id of a pack (``pack_submission_id``)."""
    return submission_id is not None and submission_id.startswith(PACK_PREFIX)


def create_job(engine: Engine, *, spec: TrainingSpec, job_id: str | None = None,
               origin: str = "api", status: JobStatus = JobStatus.QUEUED,
               ray_submission_id: str | None = None, submitted_by: str | None = None,
               idempotency_key: str | None = None, request_hash: str | None = None,
               data_prefixes: list[str] | None = None,
               sql_connections: list[str] | None = None, **columns: Any) -> Job:
    """Insert a job and its first timeline event in one transaction. A second job with the
    same (``submitted_by``, ``idempotency_key``) raises IntegrityError. ``data_prefixes`` and
    ``sql_connections`` are the submitting token's data access (None: not narrowed), which
    the driver applies again when it reads; ``columns``: more of the job's columns (a
    rerun's ``rerun_of`` and ``pinned_files``), stored with it."""
    job = Job(
        id=job_id or new_job_id(), status=status.value, owner=spec.owner, project=spec.project,
        trainer=spec.trainer, model_name=spec.model_name,
        model_description=spec.model_description, workflow_name=spec.train.workflow_name,
        spec=spec.model_dump(mode="json"), spec_hash=spec.spec_hash(), origin=origin,
        ray_submission_id=ray_submission_id, submitted_by=submitted_by,
        idempotency_key=idempotency_key, request_hash=request_hash,
        data_prefixes=data_prefixes or None, sql_connections=sql_connections,
        priority=spec.priority, **columns,
    )
    with session_scope(engine) as session:
        session.add(job)
        session.flush()
        session.add(JobEvent(job_id=job.id, kind="status", message=status.value))
    return job


def get_job(engine: Engine, *, job_id: str) -> Job:
    """The job, or NotFoundError."""
    with session_scope(engine) as session:
        job = session.get(Job, job_id)
        if job is None:
            raise NotFoundError(f"no job with id {job_id!r}")
        return job


def find_by_idempotency_key(engine: Engine, *, submitted_by: str, key: str) -> Job | None:
    """The job ``submitted_by`` created with Idempotency-Key ``key``, if any."""
    with session_scope(engine) as session:
        query = select(Job).where(Job.submitted_by == submitted_by,
                                  Job.idempotency_key == key)
        return session.exec(query).first()


def _encode_cursor(job: Job) -> str:
    raw = f"{as_utc(job.created_at).isoformat()}|{job.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        created, job_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 1)
        return datetime.fromisoformat(created), job_id
    except ValueError:  # binascii.Error, UnicodeError, unpacking, fromisoformat: all ValueErrors
        raise SpecError("cursor is not valid: pass back the next_cursor of a previous page",
                        details=[{"field": "cursor", "message": "invalid cursor"}]) from None


def list_jobs(engine: Engine, *, owner: str | None = None, project: str | None = None,
              status: JobStatus | None = None, limit: int = 50,
              cursor: str | None = None) -> tuple[list[Job], str | None]:
    """A page of jobs, newest first, and the cursor of the next page (None on the last).

    Keyset pagination: the filters are equalities and the cursor is one row comparison
    ``(created_at, id) < (…)``, ordered by ``created_at DESC, id DESC``, so every filter walks
    one of the (filter columns…, created_at, id) indexes of migration 0006 backwards and reads
    only the rows of the page, however deep the page (never an OFFSET)."""
    query = select(Job)
    if owner:
        query = query.where(Job.owner == owner)
    if project:
        query = query.where(Job.project == project)
    if status:
        query = query.where(Job.status == status.value)
    if cursor:
        created, job_id = _decode_cursor(cursor)
        query = query.where(tuple_(col(Job.created_at), col(Job.id)) < (created, job_id))
    query = query.order_by(col(Job.created_at).desc(), col(Job.id).desc()).limit(limit + 1)
    with session_scope(engine) as session:
        jobs = list(session.exec(query).all())
    next_cursor = _encode_cursor(jobs[limit - 1]) if len(jobs) > limit else None
    return jobs[:limit], next_cursor


@dataclass(frozen=True)
class QueuedWork:
    """What the queue needs of an active job: its columns and the spec's
    ``train.resources``, not the whole spec (a plan over thousands of jobs stays cheap)."""

    id: str
    owner: str
    priority: int | None
    created_at: datetime
    status: str
    status_reason: str | None
    pool: str | None
    ray_submission_id: str | None
    resources: dict[str, Any] | None

    @classmethod
    def of(cls, job: Job) -> QueuedWork:
        """The queue's view of a job already loaded."""
        return cls(id=job.id, owner=job.owner, priority=job.priority, created_at=job.created_at,
                   status=job.status, status_reason=job.status_reason, pool=job.pool,
                   ray_submission_id=job.ray_submission_id,
                   resources=((job.spec or {}).get("train") or {}).get("resources"))


def list_active_work(engine: Engine, *, owner: str | None = None) -> list[QueuedWork]:
    """:func:`list_active_jobs` (of one ``owner`` when given) as the queue sees them, in the
    same order, in one query that reads only the columns and the spec's ``train.resources``
    (JSON path in the database)."""
    resources = col(Job.spec)[("train", "resources")]
    conditions: list[Any] = [col(Job.status).in_([s.value for s in ACTIVE_STATUSES])]
    if owner is not None:
        conditions.append(col(Job.owner) == owner)
    with session_scope(engine) as session:
        query = sa_select(col(Job.id), col(Job.owner), col(Job.priority), col(Job.created_at),
                          col(Job.status), col(Job.status_reason), col(Job.pool),
                          col(Job.ray_submission_id), resources)\
            .where(*conditions).order_by(col(Job.created_at), col(Job.id))
        return [QueuedWork(*row) for row in session.execute(query).all()]


def list_active_jobs(engine: Engine, *, waiting_in_queue_too: bool = True) -> list[Job]:
    """Every job that is not yet terminal, oldest first (queued jobs start in that order);
    without those QUEUED and never submitted unless ``waiting_in_queue_too``."""
    conditions = [col(Job.status).in_([s.value for s in ACTIVE_STATUSES])]
    if not waiting_in_queue_too:
        conditions.append(not_(waiting_in_queue()))
    with session_scope(engine) as session:
        query = select(Job).where(*conditions).order_by(col(Job.created_at), col(Job.id))
        return list(session.exec(query).all())


def waiting_in_queue() -> Any:
    """The condition of a job that waits in Railyard's queue: QUEUED and never submitted."""
    return and_(col(Job.status) == JobStatus.QUEUED.value, col(Job.ray_submission_id).is_(None))


def list_jobs_to_reconcile(engine: Engine) -> list[Job]:
    """The active jobs the reconciler checks against Ray, oldest first: all but those QUEUED
    and never submitted (the queue releases those from :func:`list_active_work`'s light rows;
    a burst leaves thousands of them, each spec a row not worth loading every tick)."""
    return list_active_jobs(engine, waiting_in_queue_too=False)


def transition(engine: Engine, *, job_id: str, status: JobStatus,
               allowed_from: frozenset[JobStatus] = ACTIVE_STATUSES,
               message: str | None = None, attempt: int | None = None,
               **fields: Any) -> bool:
    """Move a job to ``status`` if it is currently in ``allowed_from`` (and, given
    ``attempt``, still on that attempt); record the event.

    Returns False (changing nothing) when the job has already moved elsewhere.
    """
    values: dict[str, Any] = {"status": status.value, **fields}
    if status.is_terminal() and "finished_at" not in values:
        values["finished_at"] = utcnow()
    guard = [col(Job.id) == job_id, col(Job.status).in_([s.value for s in allowed_from])]
    if attempt is not None:
        guard.append(col(Job.attempt) == attempt)
    with session_scope(engine) as session:
        result = session.exec(update(Job).where(*guard).values(**values))
        if result.rowcount == 0:
            return False
        session.add(JobEvent(job_id=job_id, kind="status", message=message or status.value))
        if status.value in WEBHOOK_EVENT_TYPES:     # the webhooks' outbox, in this transaction
            session.add(outbox_event(job_id=job_id, event_type=status.value))
    return True


def update_job(engine: Engine, *, job_id: str, **fields: Any) -> None:
    """Set fields on a job regardless of its status (results, phase, artifacts)."""
    with session_scope(engine) as session:
        session.exec(update(Job).where(col(Job.id) == job_id).values(**fields))


def set_status_reason(engine: Engine, *, job_id: str, reason: str,
                      event_kind: str | None = None) -> Job:
    """Store why the job waits (``status_reason``) and, with ``event_kind``, add that event
    with the reason to its timeline, in one transaction; the job as stored after it."""
    with session_scope(engine) as session:
        if event_kind is not None:
            session.add(JobEvent(job_id=job_id, kind=event_kind, message=reason))
        session.exec(update(Job).where(col(Job.id) == job_id).values(status_reason=reason))
        job = session.get(Job, job_id, populate_existing=True)
        if job is None:
            raise NotFoundError(f"no job with id {job_id!r}")
        return job


def refresh_queue_reasons(engine: Engine, reasons: Mapping[str, str]) -> int:
    """Store the new reasons (job id -> ``queued: position …``) of jobs that already wait in
    the queue, in one statement run for every row: a job released ahead moves every place
    behind it. Only a job still QUEUED, never submitted and with a ``queued:`` reason changes
    (its timeline has its ``queued`` event already); the number of jobs changed."""
    if not reasons:
        return 0
    table = Job.__table__   # type: ignore[attr-defined]
    statement = table.update().where(
        table.c.id == bindparam("b_id"), waiting_in_queue(),
        table.c.status_reason.like("queued:%"),
    ).values(status_reason=bindparam("b_reason"))
    with session_scope(engine) as session:
        result = session.connection().execute(
            statement, [{"b_id": job_id, "b_reason": reason}
                        for job_id, reason in reasons.items()])
        return result.rowcount


def add_event(engine: Engine, *, job_id: str, kind: str, phase: str | None = None,
              message: str | None = None) -> None:
    """Append an entry to a job's timeline."""
    with session_scope(engine) as session:
        session.add(JobEvent(job_id=job_id, kind=kind, phase=phase, message=message))


def list_events(engine: Engine, *, job_id: str) -> list[JobEvent]:
    """A job's timeline, oldest first."""
    with session_scope(engine) as session:
        query = select(JobEvent).where(JobEvent.job_id == job_id).order_by(col(JobEvent.id))
        return list(session.exec(query).all())


def list_events_for(engine: Engine, *, job_ids: Iterable[str],
                    kinds: Collection[str] | None = None) -> dict[str, list[JobEvent]]:
    """The timelines of several jobs in one query (a list page's): job id -> its events,
    oldest first; a job without events maps to []. ``kinds`` keeps only events of those kinds
    (the list's phases need only the phase and attempt events, not trial records)."""
    ids = list(dict.fromkeys(job_ids))
    found: dict[str, list[JobEvent]] = {job_id: [] for job_id in ids}
    if not ids:
        return found
    query = select(JobEvent).where(col(JobEvent.job_id).in_(ids))
    if kinds is not None:
        query = query.where(col(JobEvent.kind).in_(list(kinds)))
    query = query.order_by(col(JobEvent.job_id), col(JobEvent.id))      # ix_job_event_job_id_id
    with session_scope(engine) as session:
        for event in session.exec(query).all():
            found[event.job_id].append(event)
    return found


@overload
def as_utc(moment: datetime) -> datetime: ...


@overload
def as_utc(moment: datetime | None) -> datetime | None: ...


def as_utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def record_trial(engine: Engine, *, job_id: str, trial: dict[str, Any]) -> None:
    """Store a sweep trial's record (params, metrics, status, duration, error) on the job's
    timeline; the newest record of a trial id wins."""
    record_trials(engine, job_id=job_id, trials=[trial])


def record_trials(engine: Engine, *, job_id: str, trials: list[dict[str, Any]]) -> None:
    """Store several trial records in one transaction (see ``record_trial``)."""
    import json

    with session_scope(engine) as session:
        for trial in trials:
            session.add(JobEvent(job_id=job_id, kind="trial", phase="train",
                                 message=json.dumps(trial, sort_keys=True, default=str)))


def list_trials(engine: Engine, *, job_id: str) -> list[dict[str, Any]]:
    """The job's trials, one record per trial id (the newest), in the order they ended."""
    import json

    latest: dict[str, dict[str, Any]] = {}
    for event in list_events(engine, job_id=job_id):
        if event.kind == "trial" and event.message:
            record = json.loads(event.message)
            latest.pop(record["trial_id"], None)
            latest[record["trial_id"]] = record
    return list(latest.values())


def record_partition_model(engine: Engine, *, job_id: str, model: dict[str, Any]) -> None:
    """Store one fan-out partition's model record (metrics, artifact, status, error)."""
    import json

    add_event(engine, job_id=job_id, kind="partition_model", phase="train",
              message=json.dumps(model, sort_keys=True, default=str))


def list_partition_models(engine: Engine, *, job_id: str) -> list[dict[str, Any]]:
    """A fan-out job's per-partition models, sorted by partition value."""
    import json

    records = {}
    for event in list_events(engine, job_id=job_id):
        if event.kind == "partition_model" and event.message:
            record = json.loads(event.message)
            records[record["partition"]] = record
    return [records[k] for k in sorted(records)]


# ---------------------------------------------------------------------- attempts (retries)
def start_attempt(engine: Engine, *, job_id: str, attempt: int,
                  ray_submission_id: str | None) -> None:
    """Record that ``attempt`` of a job started running (idempotent per attempt number)."""
    with session_scope(engine) as session:
        exists = session.exec(select(JobAttempt).where(JobAttempt.job_id == job_id,
                                                       JobAttempt.attempt == attempt)).first()
        if exists is None:
            session.add(JobAttempt(job_id=job_id, attempt=attempt,
                                   ray_submission_id=ray_submission_id))
            session.add(JobEvent(job_id=job_id, kind="attempt_started",
                                 message=f"attempt {attempt} started"
                                         + (f" as {ray_submission_id}" if ray_submission_id
                                            else "")))


def finish_attempt(engine: Engine, *, job_id: str, attempt: int, status: JobStatus,
                   failure_kind: FailureKind | None = None, error: str | None = None,
                   error_phase: str | None = None,
                   ray_submission_id: str | None = None) -> bool:
    """Close an attempt with its outcome. An attempt whose driver never started has no row
    yet; one is written for it, so every attempt that was submitted is kept.

    Returns True when this call closed the attempt, False when it was closed already (by a
    concurrent caller: the driver and the reconciler may both see one failure).
    """
    from sqlalchemy.exc import IntegrityError

    values: dict[str, Any] = {"status": status.value, "finished_at": utcnow(),
                              "failure_kind": failure_kind.value if failure_kind else None,
                              "error": error[:8000] if error else None,
                              "error_phase": error_phase}
    try:
        with session_scope(engine) as session:
            result = session.exec(update(JobAttempt)
                                  .where(col(JobAttempt.job_id) == job_id,
                                         col(JobAttempt.attempt) == attempt,
                                         col(JobAttempt.finished_at).is_(None))
                                  .values(**values))
            if result.rowcount == 1:
                return True
            if session.exec(select(JobAttempt).where(
                    JobAttempt.job_id == job_id, JobAttempt.attempt == attempt)).first():
                return False
            session.add(JobAttempt(job_id=job_id, attempt=attempt,
                                   ray_submission_id=ray_submission_id, **values))
    except IntegrityError:      # a concurrent caller wrote the attempt's row first
        return False
    return True


def list_attempts(engine: Engine, *, job_id: str) -> list[JobAttempt]:
    """A job's attempts, first to last."""
    with session_scope(engine) as session:
        query = select(JobAttempt).where(JobAttempt.job_id == job_id)\
            .order_by(col(JobAttempt.attempt))
        return list(session.exec(query).all())


def failures_of_kind(engine: Engine, *, job_id: str, kind: FailureKind) -> int:
    """How many of a job's attempts failed for ``kind`` reasons (each kind has its budget)."""
    return sum(1 for a in list_attempts(engine, job_id=job_id)
               if a.status == JobStatus.FAILED.value and a.failure_kind == kind.value)


def requeue_for_retry(engine: Engine, *, job_id: str, from_attempt: int,
                      message: str) -> bool:
    """Put a failed attempt's job back in the queue as attempt ``from_attempt + 1``, with no
    Ray submission, so the service submits it again. False if the job moved on meanwhile
    (cancelled, or already requeued)."""
    with session_scope(engine) as session:
        result = session.exec(
            update(Job)
            .where(col(Job.id) == job_id, col(Job.attempt) == from_attempt,
                   col(Job.status).in_([s.value for s in ACTIVE_STATUSES]))
            .values(status=JobStatus.QUEUED.value, attempt=from_attempt + 1,
                    ray_submission_id=None, submitted_at=None, phase=None,
                    heartbeat_at=None, status_reason=f"retrying: {message}"[:2000]))
        if result.rowcount == 0:
            return False
        session.add(JobEvent(job_id=job_id, kind="retry", message=message))
    return True



# ---------------------------------------------------------------------- retention
def finished_job_ids(engine: Engine, job_ids: Collection[str], *,
                     chunk: int = 1000) -> set[str]:
    """Those of ``job_ids`` whose jobs are in a terminal status."""
    ids = sorted(set(job_ids))
    found: set[str] = set()
    with session_scope(engine) as session:
        for start in range(0, len(ids), chunk):
            found.update(session.exec(select(Job.id).where(
                col(Job.id).in_(ids[start:start + chunk]),
                col(Job.status).in_(sorted(s.value for s in TERMINAL_STATUSES)))).all())
    return found


def active_job_ids_on(engine: Engine, submission_id: str) -> set[str]:
    """The jobs not yet in a terminal status whose current attempt runs as ``submission_id``
    (several for a pack)."""
    with session_scope(engine) as session:
        return set(session.exec(select(Job.id).where(
            col(Job.ray_submission_id) == submission_id,
            # by the status index: live jobs are few, a store's history is large
            col(Job.status).in_(sorted(s.value for s in JobStatus
                                       if s not in TERMINAL_STATUSES)))).all())


def job_states(engine: Engine, job_ids: Collection[str]) -> dict[str, tuple[str, str | None]]:
    """The status and phase of each of ``job_ids`` that exists, in one query (the API's long
    poll, railyard.control.job_watch)."""
    if not job_ids:
        return {}
    with session_scope(engine) as session:
        rows = session.exec(select(Job.id, Job.status, Job.phase).where(
            col(Job.id).in_(sorted(set(job_ids))))).all()
    return {job_id: (status, phase) for job_id, status, phase in rows}


def prune_jobs(engine: Engine, *, finished_before: datetime,
               statuses: Collection[JobStatus] = TERMINAL_STATUSES, batch_size: int = 1000,
               dry_run: bool = False,
               keep: Callable[[list[str]], Collection[str]] | None = None) -> int:
    """Delete the jobs in ``statuses`` (terminal ones only) that finished before
    ``finished_before``, with their events and attempts, ``batch_size`` jobs per transaction
    (short transactions: the API and the reconciler keep working meanwhile). Active jobs are
    never touched: the delete itself is guarded by status too. Returns how many jobs were
    deleted (with ``dry_run``: how many would be, deleting nothing).

    ``keep`` is the hook for whatever must outlive retention: given a batch of candidate ids
    it returns those to keep. A model registry that keeps registered models' jobs (their
    spec, metrics and timeline) passes its lookup here, as `railyard jobs prune` does.
    """
    wanted = {JobStatus(s) for s in statuses}
    if not wanted or not wanted <= TERMINAL_STATUSES:
        active = sorted(s.value for s in wanted - TERMINAL_STATUSES)
        raise SpecError(f"only finished jobs can be pruned, not {', '.join(active) or 'none'}; "
                        "pass some of SUCCEEDED, FAILED, CANCELLED",
                        details=[{"field": "status", "message": "not a terminal status"}])
    values = sorted(s.value for s in wanted)
    # finished_at >= created_at, so created_at < cutoff narrows the walk to the
    # (status, created_at, id) index's old end; the keyset (created_at, id) > last moves on.
    base = (col(Job.status).in_(values), col(Job.created_at) < finished_before,
            col(Job.finished_at) < finished_before)
    total = 0
    last: tuple[datetime, str] | None = None
    while True:
        query = select(Job.id, Job.created_at).where(*base)
        if last is not None:
            query = query.where(tuple_(col(Job.created_at), col(Job.id)) > last)
        query = query.order_by(col(Job.created_at), col(Job.id)).limit(batch_size)
        with session_scope(engine) as session:
            rows = list(session.exec(query).all())
            if not rows:
                return total
            last = (rows[-1][1], rows[-1][0])
            ids = [job_id for job_id, _ in rows]
            if keep is not None:
                kept = set(keep(ids))
                ids = [job_id for job_id in ids if job_id not in kept]
            if not ids:
                continue
            if dry_run:
                total += len(ids)
                continue
            session.exec(delete(JobEvent).where(col(JobEvent.job_id).in_(ids)))
            session.exec(delete(JobAttempt).where(col(JobAttempt.job_id).in_(ids)))
            result = session.exec(delete(Job).where(col(Job.id).in_(ids),
                                                    col(Job.status).in_(values)))
            total += result.rowcount
