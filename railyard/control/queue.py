"""The order in which queued jobs go to Ray, and why each of the others waits.

Pure functions over the active jobs (:class:`Work`) and the teams' quotas (:class:`Quota`):
no database, no Ray, so the rules are unit-tested on their own. :mod:`railyard.control.team_limits`
builds the inputs from the job store; the job service submits what :func:`plan` releases.

The queue's order:

1. **priority**, higher first (the spec's ``priority``, 0-100, default 50);
2. **fair share** among jobs of equal priority: the team with the least work on Ray goes
   first (fewest jobs, then fewest CPUs), counting the jobs placed before it in the queue, so
   two teams' jobs interleave instead of one team's backlog going first;
3. **first in, first out**.

A job is released when its team stays within its quotas (jobs on Ray, CPUs on Ray; 0: no
limit). A team's jobs leave in queue order: once one waits for its team's quota, the team's
later jobs wait behind it (a small job cannot starve a large one), except a job that could
never fit (more CPUs than the team may use at all), which waits without blocking the others.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal


@dataclass(frozen=True)
class Work:
    """One active job as the queue sees it: ``on_ray`` once submitted (PENDING or RUNNING,
    holding its team's quota), else waiting in the queue."""

    id: str
    owner: str
    priority: int
    created_at: datetime
    pool: str
    cpus: float
    on_ray: bool


@dataclass(frozen=True)
class Quota:
    """A team's limits: jobs and CPUs on Ray at once (0: no limit)."""

    max_jobs: int = 0
    max_cpus: float = 0.0

    @property
    def unlimited(self) -> bool:
        """Neither limit set: the queue never holds this team's jobs (unless paused)."""
        return not self.max_jobs and not self.max_cpus

    def holding_limit(self, jobs_on: int, cpus_on: float, cpus: float
                      ) -> Literal["jobs", "cpus"] | None:
        """The limit that holds back a job of ``cpus`` CPUs while the team has ``jobs_on``
        jobs using ``cpus_on`` CPUs on Ray; None when it fits. (CPU sums are floats: a
        billionth of a CPU over is still within.)"""
        if self.max_jobs and jobs_on >= self.max_jobs:
            return "jobs"
        if self.max_cpus and cpus_on + cpus > self.max_cpus + 1e-9:
            return "cpus"
        return None


@dataclass(frozen=True)
class Place:
    """A queued job's place: its position among the queued jobs of its pool (1 = next), and
    whether it goes to Ray now (``released``) or why it waits (``why``)."""

    job: Work
    position: int
    queued_in_pool: int
    released: bool
    why: str | None = None

    @property
    def reason(self) -> str | None:
        """The job's ``status_reason`` while it waits; None when it is released."""
        if self.released:
            return None
        return (f"queued: position {self.position} of {self.queued_in_pool} in pool "
                f"{self.job.pool} ({self.why})")


@dataclass
class Plan:
    """Every queued job in queue order (``places``) and which of them go to Ray now."""

    places: list[Place] = field(default_factory=list)

    @property
    def released(self) -> list[Work]:
        """The jobs to submit now, in queue order."""
        return [p.job for p in self.places if p.released]

    def place_of(self, job_id: str) -> Place | None:
        """The place of a queued job; None for a job not in the queue."""
        return next((p for p in self.places if p.job.id == job_id), None)

    def by_pool(self) -> dict[str, list[Place]]:
        """The queue of each pool, in order."""
        pools: dict[str, list[Place]] = defaultdict(list)
        for p in self.places:
            pools[p.job.pool].append(p)
        return dict(sorted(pools.items()))


def job_cpus(resources: Mapping[str, Any] | None) -> float:
    """The CPUs a job counts against its team's quota, from its ``train.resources``:
    ``num_workers`` x ``cpus_per_worker`` (unset: 1 per worker)."""
    resources = resources or {}
    workers = int(resources.get("num_workers") or 1)
    return workers * float(resources.get("cpus_per_worker") or 1.0)


def _fmt(value: float) -> str:
    return f"{value:g}"


def queue_order(work: Iterable[Work]) -> list[Work]:
    """The queued jobs of ``work`` in the order they go to Ray: priority, then fair share
    (least work on Ray, counting the jobs ahead in the queue as started), then first in, first
    out."""
    work = list(work)
    jobs_on: dict[str, int] = defaultdict(int)
    cpus_on: dict[str, float] = defaultdict(float)
    for w in work:
        if w.on_ray:
            jobs_on[w.owner] += 1
            cpus_on[w.owner] += w.cpus
    queued = sorted((w for w in work if not w.on_ray), key=lambda w: (w.created_at, w.id))
    order: list[Work] = []
    for priority in sorted({w.priority for w in queued}, reverse=True):
        heads: dict[str, deque[Work]] = defaultdict(deque)
        for w in queued:
            if w.priority == priority:
                heads[w.owner].append(w)
        while heads:
            team = min(heads, key=lambda t: (jobs_on[t], cpus_on[t], heads[t][0].created_at,
                                             heads[t][0].id))
            nxt = heads[team].popleft()
            if not heads[team]:
                del heads[team]
            order.append(nxt)
            jobs_on[team] += 1
            cpus_on[team] += nxt.cpus
    return order


def plan(work: Iterable[Work], quotas: Mapping[str, Quota], default: Quota,
         *, paused: bool = False) -> Plan:
    """Which queued jobs go to Ray now, and the place and reason of every queued job.

    ``quotas`` holds the teams with their own limits; the others get ``default``. With
    ``paused`` (RAILYARD_SUBMISSION_PAUSED) nothing is released.
    """
    work = list(work)
    jobs_on: dict[str, int] = defaultdict(int)
    cpus_on: dict[str, float] = defaultdict(float)
    for w in work:
        if w.on_ray:
            jobs_on[w.owner] += 1
            cpus_on[w.owner] += w.cpus
    order = queue_order(work)
    in_pool: dict[str, int] = defaultdict(int)
    for w in order:
        in_pool[w.pool] += 1
    seen: dict[str, int] = defaultdict(int)
    blocked: dict[str, str] = {}
    places = []
    for w in order:
        seen[w.pool] += 1
        quota = quotas.get(w.owner, default)
        why: str | None = None
        if paused:
            why = "submission is paused by the operator (RAILYARD_SUBMISSION_PAUSED)"
        elif quota.max_cpus and w.cpus > quota.max_cpus:
            why = (f"it needs {_fmt(w.cpus)} CPUs, more than team {w.owner!r} may use at once "
                   f"({_fmt(quota.max_cpus)}); lower train.resources or ask an admin to raise "
                   f"the quota: railyard team set {w.owner} --max-cpus N")
        elif w.owner in blocked:
            why = blocked[w.owner]
        elif (limit := quota.holding_limit(jobs_on[w.owner], cpus_on[w.owner],
                                           w.cpus)) == "jobs":
            over = jobs_on[w.owner] - quota.max_jobs
            why = blocked[w.owner] = (f"team {w.owner!r} at its limit of {quota.max_jobs} "
                                      "running" + (f"; {jobs_on[w.owner]} on Ray" if over
                                                   else ""))
        elif limit == "cpus":
            why = blocked[w.owner] = (
                f"team {w.owner!r} at its limit of {_fmt(quota.max_cpus)} CPUs: "
                f"{_fmt(cpus_on[w.owner])} in use on Ray, this job needs {_fmt(w.cpus)}")
        if why is None:
            jobs_on[w.owner] += 1
            cpus_on[w.owner] += w.cpus
        places.append(Place(job=w, position=seen[w.pool], queued_in_pool=in_pool[w.pool],
                            released=why is None, why=why))
    return Plan(places)


def preemption_victim(work: Iterable[Work], job: Work, *, min_priority: int) -> Work | None:
    """The running job a queued ``job`` of priority >= ``min_priority`` may preempt in its
    pool: the lowest-priority job there below ``job``'s priority (the newest among equals, so
    the least work is lost); None when there is none."""
    if job.priority < min_priority:
        return None
    candidates = [w for w in work if w.on_ray and w.pool == job.pool
                  and w.priority < job.priority]
    if not candidates:
        return None
    return min(candidates, key=lambda w: (w.priority, -w.created_at.timestamp(), w.id))
