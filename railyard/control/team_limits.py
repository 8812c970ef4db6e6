"""Per-team quotas and the queue, read from the job store: at most
RAILYARD_MAX_CONCURRENT_JOBS_PER_TEAM jobs and RAILYARD_MAX_CPUS_PER_TEAM CPUs of one owner are
on Ray (submitted and not finished) at a time, unless an admin set the team's own quota
(``team_quota``: ``railyard team set``, ``PUT /v1/teams/{team}/quota``). Jobs over a quota are
stored and stay QUEUED with a ``status_reason``; the order in which the queue releases them
(priority, fair share, first in first out) is :mod:`railyard.control.queue`'s.

Admission is decided under a per-team lock of the process, so concurrent requests to one API
replica cannot overshoot a quota; with several replicas it can be exceeded briefly by the
number of replicas submitting for the same team at the same moment.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine

from railyard.cluster.pools import Pool, choose_pool, load_pools
from railyard.config import Settings
from railyard.control import queue
from railyard.control.access import Caller
from railyard.errors import ForbiddenError, RailyardError
from railyard.jobstore import jobs, team_quotas
from railyard.jobstore.jobs import QueuedWork
from railyard.jobstore.tables import Job, JobStatus, TeamQuota
from railyard.spec.train import ResourcesSpec

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


@contextmanager
def team_lock(team: str) -> Iterator[None]:
    """Serialise admission decisions (and the submits they allow) for one team."""
    with _locks_guard:
        lock = _locks.setdefault(team, threading.Lock())
    with lock:
        yield


def default_quota(settings: Settings) -> queue.Quota:
    """The server's quota for a team without its own."""
    return queue.Quota(max_jobs=settings.max_concurrent_jobs_per_team,
                       max_cpus=settings.max_cpus_per_team)


def effective_quota(row: TeamQuota | None, settings: Settings) -> queue.Quota:
    """A team's quota: its override where set, else the server's default."""
    default = default_quota(settings)
    if row is None:
        return default
    return queue.Quota(max_jobs=default.max_jobs if row.max_jobs is None else row.max_jobs,
                       max_cpus=default.max_cpus if row.max_cpus is None else row.max_cpus)


def team_quota(engine: Engine, settings: Settings, team: str) -> queue.Quota:
    """The quota in force for ``team`` (its override, else the server's default)."""
    return effective_quota(team_quotas.get_quota(engine, team=team), settings)


def _pool_estimate(job: QueuedWork, pools: dict[str, Pool] | None,
                   memo: dict[Any, str] | None = None) -> str:
    """The job's pool: where it was placed, else what its resources ask for (the data size
    can still move an unplaced job to highmem when it is submitted). ``memo``: estimates by
    resources already made against the same ``pools`` (a burst's jobs mostly ask alike)."""
    if job.pool:
        return job.pool
    try:   # the fields of ResourcesSpec are scalars
        key: Any = tuple(sorted((job.resources or {}).items()))
        hash(key)
    except TypeError:
        key = json.dumps(job.resources, sort_keys=True)
    if memo is not None and key in memo:
        return memo[key]
    try:
        pool = choose_pool(ResourcesSpec.model_validate(job.resources or {}), 0, pools=pools)
    except (RailyardError, ValueError):
        pool = "any"
    if memo is not None:
        memo[key] = pool
    return pool


def as_work(job: QueuedWork | Job, pools: dict[str, Pool] | None = None,
            memo: dict[Any, str] | None = None) -> queue.Work:
    """An active job as the queue sees it (``memo``: see :func:`_pool_estimate`)."""
    if isinstance(job, Job):
        job = QueuedWork.of(job)
    return queue.Work(id=job.id, owner=job.owner, priority=job.priority or 0,
                      created_at=jobs.as_utc(job.created_at),
                      pool=_pool_estimate(job, pools, memo),
                      cpus=queue.job_cpus(job.resources or {}),
                      on_ray=job.ray_submission_id is not None)


def current_plan(engine: Engine, settings: Settings) -> queue.Plan:
    """The queue now: every active job and every team's quota from the job store."""
    return _plan_of(jobs.list_active_work(engine), engine, settings)


def plan_with_jobs(engine: Engine, settings: Settings
                   ) -> tuple[queue.Plan, dict[str, QueuedWork]]:
    """The queue now, and the active jobs it was made from, by id."""
    active = jobs.list_active_work(engine)
    return _plan_of(active, engine, settings), {j.id: j for j in active}


def _plan_of(active: list[QueuedWork], engine: Engine, settings: Settings) -> queue.Plan:
    try:
        pools: dict[str, Pool] | None = load_pools()
    except RailyardError:
        pools = None
    memo: dict[Any, str] = {}
    work = [as_work(j, pools, memo) for j in active
            if j.ray_submission_id is not None or j.status == JobStatus.QUEUED.value]
    quotas = {row.team: effective_quota(row, settings)
              for row in team_quotas.list_quotas(engine)}
    return queue.plan(work, quotas, default_quota(settings),
                      paused=settings.submission_paused)


def has_room(engine: Engine, settings: Settings, job: Job) -> bool:
    """Whether ``job``'s team is still within its quotas with the job added, from the team's
    jobs on Ray alone (one query, no plan of the whole queue). For a job a plan just released:
    the reconciler releases in that plan's order and re-checks, under the team's lock, only
    what a concurrent submit of the same team could have taken meanwhile."""
    quota = team_quota(engine, settings, job.owner)
    if quota.unlimited:
        return True
    on_ray = [w for w in jobs.list_active_work(engine, owner=job.owner)
              if w.ray_submission_id is not None and w.id != job.id]
    used = sum(queue.job_cpus(w.resources) for w in on_ray)
    need = queue.job_cpus(QueuedWork.of(job).resources)
    return quota.holding_limit(len(on_ray), used, need) is None


def wait_reason(engine: Engine, settings: Settings, job: Job) -> str | None:
    """None when the queue releases ``job`` now; else why it waits and where it is. The
    queue holds a job only for its team's quotas (or a pause), so a team without limits is
    answered without planning the whole queue (a burst's every submit did)."""
    if not settings.submission_paused and team_quota(engine, settings, job.owner).unlimited:
        return None
    place = current_plan(engine, settings).place_of(job.id)
    return None if place is None else place.reason


# --- what the API reads and writes --------------------------------------------------------


@dataclass(frozen=True)
class TeamQuotaView:
    """A team's quota as the API shows it: the limits in force (0: no limit), the admin's
    override of each (None: the server's default), and what the team uses now."""

    team: str
    max_jobs: int
    max_cpus: float
    override_max_jobs: int | None
    override_max_cpus: float | None
    jobs_on_ray: int
    cpus_on_ray: float
    queued: int
    updated_at: datetime | None
    updated_by: str | None


def _check_team(caller: Caller, team: str) -> None:
    if not caller.is_admin and caller.team != team:
        raise ForbiddenError(f"this token acts for team {caller.team!r}: it reads only its own "
                             f"quota (GET /v1/teams/{caller.team}/quota)")


def read_quota(engine: Engine, settings: Settings, *, caller: Caller,
               team: str) -> TeamQuotaView:
    """The team's quota and use (a team reads its own; an admin any)."""
    _check_team(caller, team)
    row = team_quotas.get_quota(engine, team=team)
    quota = effective_quota(row, settings)
    mine = [as_work(j) for j in jobs.list_active_work(engine, owner=team)]
    on_ray = [w for w in mine if w.on_ray]
    return TeamQuotaView(team=team, max_jobs=quota.max_jobs, max_cpus=quota.max_cpus,
                         override_max_jobs=row.max_jobs if row else None,
                         override_max_cpus=row.max_cpus if row else None,
                         jobs_on_ray=len(on_ray), cpus_on_ray=sum(w.cpus for w in on_ray),
                         queued=len(mine) - len(on_ray),
                         updated_at=jobs.as_utc(row.updated_at) if row else None,
                         updated_by=row.updated_by if row else None)


def write_quota(engine: Engine, settings: Settings, *, caller: Caller, team: str,
                max_jobs: int | None, max_cpus: float | None) -> TeamQuotaView:
    """Set the team's override (admin only); the queue applies it at its next decision."""
    if not caller.is_admin:
        raise ForbiddenError("only an admin token sets a team's quota (railyard team set "
                             f"{team} --max-jobs N --max-cpus N on the server)")
    team_quotas.set_quota(engine, team=team, max_jobs=max_jobs, max_cpus=max_cpus,
                          updated_by=caller.token_prefix or caller.team)
    return read_quota(engine, settings, caller=caller, team=team)


def visible_queue(engine: Engine, settings: Settings, *, caller: Caller
                  ) -> tuple[dict[str, tuple[int, list[queue.Place]]], dict[str, str | None]]:
    """The queue of each pool: how many jobs wait there and the places ``caller`` may see (its
    team's jobs; every job for an admin), with positions among all the pool's jobs; and each
    active job's stored ``status_reason`` (why a job the quotas let go still waits)."""
    active = jobs.list_active_work(engine)
    stored = {j.id: j.status_reason for j in active}
    out = {}
    for pool, places in _plan_of(active, engine, settings).by_pool().items():
        out[pool] = (len(places), [p for p in places
                                   if caller.is_admin or p.job.owner == caller.team])
    return out, stored


# --- preemption (RAILYARD_PREEMPTION) ------------------------------------------------------

PREEMPTION_GRACE_S = 120.0      # one preemption per waiting job in this long
_preempted_for: dict[str, float] = {}


def preemption_victim(engine: Engine, job: Job, min_priority: int) -> Job | None:
    """The job on Ray that queued ``job`` (priority >= ``min_priority``, its pool full) may
    stop: the lowest-priority one of its pool, below its own priority; None when there is none
    or ``job`` already preempted one in the last PREEMPTION_GRACE_S (the pool shows the freed
    CPUs only once Ray has ended the stopped job)."""
    now = time.monotonic()
    with _locks_guard:
        for job_id, since in list(_preempted_for.items()):
            if now - since > PREEMPTION_GRACE_S:
                del _preempted_for[job_id]
        if job.id in _preempted_for:
            return None
    try:
        pools: dict[str, Pool] | None = load_pools()
    except RailyardError:
        pools = None
    victim = queue.preemption_victim([as_work(j, pools) for j in jobs.list_active_work(engine)
                                      if j.ray_submission_id is not None],
                                     as_work(job, pools), min_priority=min_priority)
    if victim is None:
        return None
    with _locks_guard:
        _preempted_for[job.id] = now
    return jobs.get_job(engine, job_id=victim.id)
