"""Admission by capacity: Railyard hands Ray only the jobs a pool can start now.

Each Ray job is a ``JobSubmissionClient.submit_job``: one ``JobSupervisor`` actor and one
driver, started at once whatever the pool's CPUs (a driver asks Ray for no CPU). A burst of a
thousand submissions is a thousand actors and drivers on the GCS and the nodes at the same
moment, the mass-submission pattern that takes Ray's GCS down (ray-project/ray#41241). So a
pool's jobs on Ray (PENDING or RUNNING there) may hold at most the pool's CPUs, each job
counted at what its ``train.resources`` ask (``num_workers`` × ``cpus_per_worker``, 1 CPU a
worker when unset). The rest stay QUEUED in Railyard's queue with a ``status_reason``; the
reconciler offers them again every tick, in the queue's order, as jobs end.

"On Ray" is the job database's PENDING and RUNNING jobs of the pool, plus the jobs Ray still
listed alive at the reconciler's last tick (a driver records its result a moment before its
Ray job ends), plus admissions this process made that the database does not show yet
(concurrent requests cannot both take the last CPU). A pool with no alive node is not held
back: Ray keeps its jobs PENDING with the pool's reason, where an autoscaler sees them. With
several API replicas, each admits against the database, so a pool can be overfilled briefly by
the replicas admitting at the same moment.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy import or_
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from railyard.cluster import placement
from railyard.control.backend import BackendStatus, JobBackend
from railyard.errors import BackendUnavailableError
from railyard.jobstore import jobs
from railyard.jobstore.engine import session_scope
from railyard.jobstore.tables import Job, JobStatus
from railyard.spec import ParquetSource, TrainingSpec

# An admission whose job never shows up on Ray in the database (its submit failed and nobody
# asked again) stops counting after this long.
RESERVATION_TTL_S = 30.0
# Before admitting, Ray's list of live jobs is read again when the last one is older than this.
RAY_VIEW_MAX_AGE_S = 1.0
_ON_RAY = (JobStatus.PENDING.value, JobStatus.RUNNING.value)

_lock = threading.Lock()
_reserved: dict[str, tuple[str, float, float]] = {}     # job id -> (pool, cpus, monotonic)
_ray_alive: frozenset[str] = frozenset()                 # submission ids alive at the last tick
_noted_at = float("-inf")                                # when _ray_alive was read
_pool_of: dict[str, str | None] = {}                     # job id -> pool (placement is costly)


def job_cpus(spec: TrainingSpec | Mapping) -> float:
    """The CPUs a job's ``train.resources`` ask for: workers × CPUs per worker (1 unset)."""
    if isinstance(spec, TrainingSpec):
        resources = spec.train.resources
        return resources.num_workers * (resources.cpus_per_worker or 1.0)
    asked = ((spec.get("train") or {}).get("resources") or {})
    return float(asked.get("num_workers") or 1) * float(asked.get("cpus_per_worker") or 1.0)


def note_ray_statuses(statuses: Mapping[str, BackendStatus]) -> None:
    """Remember which Ray jobs were alive (PENDING/RUNNING) at the reconciler's tick."""
    with _lock:
        _note(statuses)


def _note(statuses: Mapping[str, BackendStatus]) -> None:
    global _ray_alive, _noted_at
    _ray_alive = frozenset(sid for sid, status in statuses.items() if not status.is_terminal)
    _noted_at = time.monotonic()


def forget() -> None:
    """Drop what this process remembers (tests start each case clean)."""
    global _ray_alive, _noted_at
    with _lock:
        _reserved.clear()
        _pool_of.clear()
        _ray_alive, _noted_at = frozenset(), float("-inf")


def wait_reason(engine: Engine, job: Job, spec: TrainingSpec, backend: JobBackend, *,
                behind_queue: bool = False, slot_cpus: float = 0.0) -> str | None:
    """None when ``job`` may go to Ray now (its admission is then counted until the database
    shows it on Ray); else why it waits, as a ``queued: …`` reason.

    ``behind_queue`` (a new submit): when jobs already wait for the job's pool because it was
    full, the job waits behind them, decided by one query: the reconciler's tick admits the
    pool's queue in order, so a CPU freed between two ticks goes to the job that waited
    longest, not to a newcomer, and a burst's submits neither ask Ray nor take the pool's
    shared count (the lock every team's submits would wait on).

    ``slot_cpus`` (packs on, ``RAILYARD_PACK_MAX_JOBS``): every Ray job on the pool counts at
    least this many CPUs, a pack or a job alone, so the pool's room frees a pack's worth at a
    time and the queue goes out in whole packs; a new submit (``behind_queue``: it goes to
    Ray alone) is counted so from its admission."""
    try:
        pool_cpus = backend.pool_cpus()
    except BackendUnavailableError:
        return None                      # the submit fails too, and the job stays QUEUED
    if not pool_cpus:
        return None                      # no pool-labelled nodes: nothing to count against
    pool = _pool_for(job, spec, backend)
    total = pool_cpus.get(pool or "", 0.0)
    if pool is None or total <= 0:
        return None
    if behind_queue and _others_wait_for(engine, pool, exclude=job.id):
        return (f"{_FULL_PREFIX}{pool}{_FULL_MARK}jobs submitted earlier wait for it); it "
                "starts when jobs on the pool finish")
    # A job wider than the pool runs alone.
    need = min(max(job_cpus(spec), slot_cpus if behind_queue else 0.0), total)
    global _noted_at
    with _lock:
        used, by_view = _in_use(engine, pool, total, exclude=job.id, slot_cpus=slot_cpus)
        # Deciding on an old view of Ray: about to admit (a job the database shows ended may
        # still be alive on Ray, its driver exiting), or refusing for jobs only that view holds
        # alive. One listing, at most once a second, outside the lock (the first thread to
        # see the view old reads it; the others decide on the view they have).
        refresh = time.monotonic() - _noted_at > RAY_VIEW_MAX_AGE_S and \
            (used + need <= total + 1e-9 or by_view > 0)
        if refresh:
            _noted_at = time.monotonic()
        else:
            return _decide(job.id, pool, need, used, total)
    try:
        statuses: Mapping[str, BackendStatus] | None = backend.list_statuses()
    except BackendUnavailableError:
        statuses = None
    with _lock:
        if statuses is not None:
            _note(statuses)
        used, _ = _in_use(engine, pool, total, exclude=job.id, slot_cpus=slot_cpus)
        return _decide(job.id, pool, need, used, total)


def full_pool(job: Job) -> str | None:
    """The pool a QUEUED job waits for because the pool is full (its reason says so), else
    None. The jobs behind it in the queue need not be offered to that pool again this tick."""
    if job.status != JobStatus.QUEUED.value or job.ray_submission_id is not None:
        return None
    if _pool_named(job.status_reason) is None:
        return None
    return job.pool or _pool_of.get(job.id)


def known_pool(job_id: str) -> str | None:
    """The pool this process found a job goes to when it was last offered; None when it was
    never offered here (the queue's own estimate can differ: the data's size may send a job
    to highmem, so an unknown job is offered rather than skipped)."""
    return _pool_of.get(job_id)


_FULL_PREFIX, _FULL_MARK = "queued: pool ", " is full ("


def _pool_named(reason: str | None) -> str | None:
    """The pool a ``queued: pool X is full (…`` reason names; None for any other reason."""
    if not reason or not reason.startswith(_FULL_PREFIX) or _FULL_MARK not in reason:
        return None
    return reason[len(_FULL_PREFIX):reason.index(_FULL_MARK)]


def room_for_queue(engine: Engine, backend: JobBackend, *, slot_cpus: float = 0.0) -> bool:
    """Whether jobs wait because their pool was full while that pool has room now, or Ray's
    view of it is too old to tell: the reconciler then releases the queue between its ticks.
    A query for the pools waited for and one per such pool; Ray is not asked here (the
    release refreshes the view, at most once a second, as a submit does)."""
    prefix = col(Job.status_reason).startswith(_FULL_PREFIX, autoescape=True)
    with session_scope(engine) as session:
        reasons = session.exec(select(Job.status_reason).distinct().where(
            jobs.waiting_in_queue(), prefix)).all()
    pools = {pool for pool in map(_pool_named, reasons) if pool is not None}
    if not pools:
        return False
    try:
        pool_cpus = backend.pool_cpus()
    except BackendUnavailableError:
        return False
    with _lock:
        stale = time.monotonic() - _noted_at > RAY_VIEW_MAX_AGE_S
        for pool in pools:
            total = pool_cpus.get(pool, 0.0)
            if total <= 0:
                continue
            used, by_view = _in_use(engine, pool, total, exclude="", slot_cpus=slot_cpus)
            if used < total - 1e-9 or (by_view > 0 and stale):
                return True
    return False


def _others_wait_for(engine: Engine, pool: str, *, exclude: str) -> bool:
    """Whether a job other than ``exclude`` waits in the queue because ``pool`` is full."""
    reason = col(Job.status_reason).startswith(f"{_FULL_PREFIX}{pool}{_FULL_MARK}",
                                               autoescape=True)
    with session_scope(engine) as session:
        query = select(Job.id).where(jobs.waiting_in_queue(), reason,
                                     col(Job.id) != exclude).limit(1)
        return session.exec(query).first() is not None


def _decide(job_id: str, pool: str, need: float, used: float, total: float) -> str | None:
    """Admit (and count the admission) or say why not; call under ``_lock``."""
    if used + need > total + 1e-9:
        _reserved.pop(job_id, None)
        return (f"{_FULL_PREFIX}{pool}{_FULL_MARK}{used:g} of {total:g} CPUs in use); it "
                "starts when jobs on the pool finish")
    _reserved[job_id] = (pool, need, time.monotonic())
    return None


def _pool_for(job: Job, spec: TrainingSpec, backend: JobBackend) -> str | None:
    """The pool the job's submit will choose (a retry keeps its pool)."""
    if job.pool:
        return job.pool
    if job.id in _pool_of:
        return _pool_of[job.id]
    from railyard.data.fetch import source_bytes

    try:
        cluster_pools = backend.node_pools()
    except BackendUnavailableError:
        cluster_pools = {}
    try:
        first = spec.data.features[0]
        data_bytes = source_bytes(first) if isinstance(first, ParquetSource) else 0
    except Exception:  # noqa: BLE001 - size only steers an automatic pool choice
        data_bytes = 0
    pool = placement.decide(spec, data_bytes=data_bytes, cluster_pools=cluster_pools).pool
    if len(_pool_of) > 50_000:
        _pool_of.clear()
    _pool_of[job.id] = pool
    return pool


def _in_use(engine: Engine, pool: str, total: float, *, exclude: str,
            slot_cpus: float = 0.0) -> tuple[float, float]:
    """CPUs the pool's jobs on Ray hold (see the module's note), and how many of them only
    the last view of Ray holds (the database shows those jobs ended); a Ray job (a pack's
    jobs together) holds at least ``slot_cpus``. Call under ``_lock``."""
    now = time.monotonic()
    for job_id, (_, _, since) in list(_reserved.items()):
        if now - since > RESERVATION_TTL_S:
            del _reserved[job_id]
    conditions: list[Any] = [col(Job.status).in_(_ON_RAY) & (col(Job.pool) == pool)]
    if _ray_alive:
        conditions.append(col(Job.ray_submission_id).in_(list(_ray_alive)))
    if _reserved:
        conditions.append(col(Job.id).in_(list(_reserved)))
    with session_scope(engine) as session:    # a few rows: the pool's jobs on Ray
        rows = [(job.id, job.pool, job.status, job.ray_submission_id, job.spec)
                for job in session.exec(select(Job).where(or_(*conditions))).all()]
    held: dict[str, list[float]] = {}     # submission id -> [CPUs, of which only by view]
    seen: set[str] = set()
    for job_id, job_pool, status, submission_id, job_spec in rows:
        reserved = _reserved.get(job_id)
        if reserved is not None and (submission_id is not None or status not in
                                     (JobStatus.QUEUED.value,)):
            del _reserved[job_id]        # the database shows it now (on Ray, or ended)
        in_database = status in _ON_RAY and submission_id is not None
        if job_id == exclude or job_pool != pool or not (in_database or
                                                         submission_id in _ray_alive):
            continue
        seen.add(job_id)
        cpus = min(job_cpus(job_spec or {}), total)
        group = held.setdefault(submission_id or job_id, [0.0, 0.0])
        group[0] += cpus
        if not in_database:
            group[1] += cpus
    used = by_view = 0.0
    for cpus, only_by_view in held.values():
        counted = min(max(cpus, slot_cpus), total)
        used += counted
        by_view += counted if only_by_view >= cpus else only_by_view
    for job_id, (job_pool, cpus, _) in _reserved.items():
        if job_id != exclude and job_pool == pool and job_id not in seen:
            used += cpus
    return used, by_view
