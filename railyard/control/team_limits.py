"""Per-team concurrency: at most RAILYARD_MAX_CONCURRENT_JOBS_PER_TEAM jobs of one owner are on
Ray (submitted and not finished) at a time. A job over the limit is stored and stays QUEUED
with a ``status_reason``; the reconciler submits a team's queued jobs in creation order as its
jobs finish.

Admission is decided under a per-team lock of the process, so concurrent requests to one API
replica cannot overshoot the limit; with several replicas it can be exceeded briefly by the
number of replicas submitting for the same team at the same moment.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import and_, func, or_
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from railyard.jobstore.engine import session_scope
from railyard.jobstore.tables import ACTIVE_STATUSES, Job, JobStatus

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


@contextmanager
def team_lock(team: str) -> Iterator[None]:
    """Serialise admission decisions (and the submits they allow) for one team."""
    with _locks_guard:
        lock = _locks.setdefault(team, threading.Lock())
    with lock:
        yield


def on_ray_count(engine: Engine, team: str) -> int:
    """How many of the team's jobs are submitted to Ray and not finished."""
    with session_scope(engine) as session:
        query = select(func.count()).select_from(Job).where(
            Job.owner == team, col(Job.ray_submission_id).is_not(None),
            col(Job.status).in_([s.value for s in ACTIVE_STATUSES]))
        return session.exec(query).one()


def queued_ahead(engine: Engine, job: Job) -> int:
    """How many of the team's unsubmitted QUEUED jobs were created before ``job``."""
    with session_scope(engine) as session:
        query = select(func.count()).select_from(Job).where(
            Job.owner == job.owner, Job.status == JobStatus.QUEUED.value,
            col(Job.ray_submission_id).is_(None), Job.id != job.id,
            or_(col(Job.created_at) < job.created_at,
                and_(col(Job.created_at) == job.created_at, col(Job.id) < job.id)))
        return session.exec(query).one()


def wait_reason(engine: Engine, job: Job, limit: int) -> str | None:
    """None when ``job`` may be submitted now; else why it waits. 0 means no limit."""
    if limit <= 0:
        return None
    running = on_ray_count(engine, job.owner)
    ahead = queued_ahead(engine, job)
    if running + ahead < limit:
        return None
    return (f"queued: team {job.owner!r} has {running} jobs on Ray (pending or running; limit "
            f"{limit})" + (f" and {ahead} queued before this one" if ahead else "")
            + "; it starts when one of them finishes (RAILYARD_MAX_CONCURRENT_JOBS_PER_TEAM)")
