"""The job service: what the API does with a spec, a job id or a cancel request.

It ties the store (database) to the execution backend (Ray Jobs) and keeps them truthful:
a job whose Ray driver is gone is never left RUNNING.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from railyard.cluster import placement
from railyard.cluster.pools import choose_pool
from railyard.config import Settings
from railyard.control import capacity, ray_history, team_limits
from railyard.control.access import SYSTEM, Caller, check_job, check_submit, owner_filter
from railyard.control.backend import BackendStatus, JobBackend
from railyard.control.packing import Packer
from railyard.errors import BackendUnavailableError, ConflictError, NotFoundError, SpecError
from railyard.jobstore import jobs
from railyard.jobstore.retries import end_failed_attempt
from railyard.jobstore.tables import FailureKind, Job, JobAttempt, JobStatus, utcnow
from railyard.spec import ParquetSource, TrainingSpec, parse_spec
from railyard.training.submit_checks import validate_spec

log = logging.getLogger(__name__)

MAX_IDEMPOTENCY_KEY_LENGTH = 255
PAUSED_REASON = "queued: submission is paused by the operator (RAILYARD_SUBMISSION_PAUSED)"
PREEMPTING_PRIORITY = 90     # with RAILYARD_PREEMPTION, the least priority that preempts


class Created(NamedTuple):
    """What a submit produced: the job, and whether it is an earlier job returned again for a
    repeated Idempotency-Key (``replayed``)."""

    job: Job
    replayed: bool


def request_hash(payload: Any) -> str:
    """SHA-256 of the request body as canonical JSON (key order and spacing do not count)."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def scoped_idempotency_key(caller: Caller, key: str) -> str:
    """The key as stored: a SHA-256 of the sending token's id and the key, so two tokens
    (even of one team, or a team named like another's) never share a key."""
    import hashlib

    scope = caller.token_prefix or f"team:{caller.team}"
    return hashlib.sha256(f"{scope}\0{key}".encode()).hexdigest()


def check_idempotency_key(key: str) -> None:
    """422 unless ``key`` is 1-255 printable ASCII characters."""
    if not key or len(key) > MAX_IDEMPOTENCY_KEY_LENGTH or \
            not all(" " <= ch <= "~" for ch in key):
        raise SpecError(
            f"Idempotency-Key header: give 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} printable ASCII "
            "characters (a UUID is a good key)",
            details=[{"field": "Idempotency-Key", "message": "empty, too long or not ASCII"}])


class JobService:
    """Submit, reconcile and cancel jobs; ``clock`` is "now" for timeouts and heartbeats."""

    def __init__(self, *, engine: Engine, backend: JobBackend, settings: Settings,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.engine, self.backend, self.settings = engine, backend, settings
        self.clock = clock
        self._registry_swept_at: datetime | None = None   # railyard.jobstore.registry sweep
        self._ray_pruned_at: datetime | None = None       # railyard.control.ray_history

    def create(self, payload: Any, *, caller: Caller = SYSTEM,
               idempotency_key: str | None = None,
               extra: dict[str, Any] | None = None) -> Created:
        """Validate a spec, store the job, submit it (or queue it while the owner's team is at
        its concurrency limit). Nothing is stored for an invalid or forbidden spec.

        With ``idempotency_key``, the caller's team gets one job per key: the same body again
        returns that job (``replayed``), another body is a 409. ``extra``: more job columns
        stored with it, in the same transaction (a rerun's ``rerun_of`` and ``pinned_files``:
        never a rerun without its pins).
        """
        body_hash = stored_key = None
        if idempotency_key is not None:
            check_idempotency_key(idempotency_key)
        spec = parse_spec(payload)
        check_submit(caller, spec)
        # Looked up only once the caller may submit this spec, and per token: a key never
        # reaches a job another token sent.
        if idempotency_key is not None:
            body_hash = request_hash(payload)
            stored_key = scoped_idempotency_key(caller, idempotency_key)
            existing = jobs.find_by_idempotency_key(self.engine, submitted_by=caller.team,
                                                     key=stored_key)
            if existing is not None:
                return Created(self._replay(caller, existing, idempotency_key, body_hash), True)
        from railyard.data.allowed_paths import DataAccess
        from railyard.data.read_plan import check_data_files

        # Before any file is opened: every local file, links resolved, against the server's
        # and the token's prefixes (the driver checks again with the access stored below).
        granted = caller.granted_sql_connections
        access = DataAccess(team=caller.team, data_prefixes=caller.data_prefixes,
                            sql_connections=granted)
        check_data_files(spec.data, settings=self.settings, access=access)
        self._check_lifecycle(spec)
        validate_spec(spec, settings=self.settings)
        choose_pool(spec.train.resources, 0)  # an unknown pool or GPUs on a CPU pool → 422
        try:
            job = jobs.create_job(self.engine, spec=spec, submitted_by=caller.team,
                                   idempotency_key=stored_key, request_hash=body_hash,
                                   data_prefixes=list(caller.data_prefixes) or None,
                                   sql_connections=None if granted is None
                                   else list(granted), **(extra or {}))
        except IntegrityError:
            # A concurrent request with the same key stored its job first.
            if not idempotency_key or not stored_key:
                raise
            existing = jobs.find_by_idempotency_key(
                self.engine, submitted_by=caller.team, key=stored_key)
            if existing is None:
                raise
            return Created(self._replay(caller, existing, idempotency_key, body_hash), True)
        return Created(self._submit(job, spec, new=True), False)

    @staticmethod
    def _replay(caller: Caller, job: Job, key: str, body_hash: str | None) -> Job:
        check_job(caller, job)
        if job.request_hash != body_hash:
            raise ConflictError(
                f"Idempotency-Key {key!r} was already used for job {job.id} with a different "
                f"request body; send a new key for a new job, or the original body to get "
                f"{job.id} back", details=[{"field": "Idempotency-Key", "job_id": job.id,
                                            "message": "key reused with another body"}])
        return job

    def list_jobs(self, *, caller: Caller = SYSTEM, owner: str | None = None,
                  project: str | None = None, status: JobStatus | None = None,
                  limit: int = 50, cursor: str | None = None) -> tuple[list[Job], str | None]:
        """A page of the jobs ``caller`` may see (its team's; every team's for an admin),
        newest first, as the database has them: no call to Ray on the list path (a page of
        50 would be 50 status calls); the background reconciler keeps the stored statuses
        true, and ``get`` reconciles the one job it reads."""
        return jobs.list_jobs(self.engine, owner=owner_filter(caller, owner), project=project,
                              status=status, limit=limit, cursor=cursor)

    def _check_lifecycle(self, spec: TrainingSpec) -> None:
        limits = {"pending_timeout_s": self.settings.max_pending_timeout_s,
                  "run_timeout_s": self.settings.max_run_timeout_s}
        for name, maximum in limits.items():
            value = getattr(spec.lifecycle, name)
            if value is not None and value > maximum:
                raise SpecError(f"lifecycle.{name}: {value}s is over this server's maximum of "
                                f"{maximum}s; ask for at most {maximum}",
                                details=[{"field": f"lifecycle.{name}", "message": "too long"}])
        for name in ("max_retries", "max_user_code_retries"):
            value = getattr(spec.lifecycle, name)
            if value > self.settings.max_retries:
                raise SpecError(
                    f"lifecycle.{name}: {value} is over this server's maximum of "
                    f"{self.settings.max_retries} retries (RAILYARD_MAX_RETRIES); ask for at "
                    f"most {self.settings.max_retries}",
                    details=[{"field": f"lifecycle.{name}", "message": "too many retries"}])

    def timeouts(self, spec: TrainingSpec) -> tuple[int, int]:
        """(pending, run) timeouts in seconds: the spec's, else the server's defaults."""
        return (spec.lifecycle.pending_timeout_s or self.settings.pending_timeout_s,
                spec.lifecycle.run_timeout_s or self.settings.run_timeout_s)

    def _placement(self, spec: TrainingSpec) -> placement.Placement:
        from railyard.data.fetch import source_bytes

        try:
            cluster_pools = self.backend.node_pools()
        except BackendUnavailableError:
            cluster_pools = {}
        try:
            first = spec.data.features[0]
            data_bytes = source_bytes(first) if isinstance(first, ParquetSource) else 0
        except Exception:  # noqa: BLE001 - size only steers an automatic pool choice
            data_bytes = 0
        return placement.decide(spec, data_bytes=data_bytes, cluster_pools=cluster_pools)

    def _submit(self, job: Job, spec: TrainingSpec, *, new: bool = False,
                released: bool = False, packer: Packer | None = None) -> Job:
        """Submit a QUEUED job to Ray if the queue releases it now (railyard.control.queue:
        priority, fair share, first in first out, within its team's quotas) and its pool can
        start it (a ``new`` job waits behind those already waiting for a full pool); otherwise
        leave it QUEUED with the reason and its place in the queue. A job a plan of the queue
        has just ``released`` needs only its team's quotas checked again. With a ``packer``,
        an admitted job is held there for a pack (``_submit_packs``) instead of submitted."""
        with team_limits.team_lock(job.owner):
            job = jobs.get_job(self.engine, job_id=job.id)
            if job.status != JobStatus.QUEUED.value or job.ray_submission_id is not None:
                return job                                # submitted or cancelled meanwhile
            if self.settings.submission_paused:
                waiting: str | None = PAUSED_REASON
            elif released and team_limits.has_room(self.engine, self.settings, job):
                waiting = None
            else:
                waiting = team_limits.wait_reason(self.engine, self.settings, job)
            if waiting is None:   # what the pool can start now (railyard.control.capacity)
                waiting = capacity.wait_reason(self.engine, job, spec, self.backend,
                                               behind_queue=new, slot_cpus=self._slot_cpus)
                if waiting is not None and self.settings.preemption:
                    self._preempt_for(job)
            if waiting is None and packer is not None:
                packer.add(job, spec, self._placement(spec))
                return job
            if waiting is None:
                return self._submit_now(job, spec)
            return self._note_waiting(job, waiting)

    @property
    def _slot_cpus(self) -> float:
        """With packs on, the CPUs each Ray job on a pool counts at least
        (railyard.control.capacity.wait_reason): a pack's worth."""
        return float(self.settings.pack_max_jobs) if self.settings.pack_max_jobs > 1 else 0.0

    def _preempt_for(self, job: Job) -> None:
        """RAILYARD_PREEMPTION: a queued job of priority >= PREEMPTING_PRIORITY that its pool
        is too full to start stops the pool's lowest-priority job on Ray (below its own), which
        goes back to the queue as its next attempt, counted against neither retry budget. One
        preemption per job at a time: the pool needs a tick or two to show the CPUs free."""
        victim = team_limits.preemption_victim(self.engine, job, PREEMPTING_PRIORITY)
        if victim is None:
            return
        attempt = victim.attempt or 1
        why = (f"preempted by job {job.id} (priority {job.priority}, team {job.owner!r}) to "
               f"free pool {victim.pool}; attempt {attempt + 1} queued (no retry budget used)")
        if not jobs.finish_attempt(self.engine, job_id=victim.id, attempt=attempt,
                                   status=JobStatus.CANCELLED, error=why,
                                   ray_submission_id=victim.ray_submission_id):
            return
        if not jobs.requeue_for_retry(self.engine, job_id=victim.id, from_attempt=attempt,
                                      message=why):
            return
        log.info("job %s: %s", victim.id, why)
        self._stop_quietly(victim)
        jobs.add_event(self.engine, job_id=job.id, kind="preempted",
                       message=f"stopped job {victim.id} (priority {victim.priority}) on pool "
                               f"{victim.pool} to start sooner")

    def _note_waiting(self, job: Job, waiting: str) -> Job:
        """Store why a QUEUED job waits; its timeline gets a ``queued`` event the first time."""
        if waiting == job.status_reason:
            return job
        first = not (job.status_reason or "").startswith("queued:")
        return jobs.set_status_reason(self.engine, job_id=job.id, reason=waiting,
                                      event_kind="queued" if first else None)

    def release_if_room(self) -> bool:
        """Between the reconciler's ticks: when jobs wait for a full pool that has room now
        (railyard.control.capacity.room_for_queue: the database only, no call to Ray),
        release the queue at once, so a job's end frees its CPUs for the next in line within
        the fast check's interval rather than at the next tick. True when it released."""
        if self.settings.submission_paused or not capacity.room_for_queue(
                self.engine, self.backend, slot_cpus=self._slot_cpus):
            return False
        self._release_queue(refresh_places=False)
        return True

    def _release_queue(self, *, refresh_places: bool = True) -> None:
        """Offer the queued jobs to Ray in the queue's order (each decided again under its
        team's lock), then (``refresh_places``) refresh the place and reason of those still
        waiting."""
        released = team_limits.current_plan(self.engine, self.settings).released
        full: set[str] = set()     # pools found full this tick: the jobs behind wait as well
        packer = Packer(self.settings.pack_max_jobs) if self.settings.pack_max_jobs > 1 \
            else None
        for work in released:
            if capacity.known_pool(work.id) in full:
                continue
            try:
                job = jobs.get_job(self.engine, job_id=work.id)
                job = self._submit(job, TrainingSpec.model_validate(job.spec),
                                   released=True, packer=packer)
                if packer is not None and packer.holds(job.id):
                    continue
                if (pool := capacity.full_pool(job)) is not None:
                    full.add(pool)
            except Exception:
                log.exception("submitting queued job %s failed", work.id)
        if packer is not None:
            self._submit_packs(packer)
        if not refresh_places:
            return
        plan, stored = team_limits.plan_with_jobs(self.engine, self.settings)
        moved: dict[str, str] = {}
        for place in plan.places:
            reason = PAUSED_REASON if self.settings.submission_paused else place.reason
            was = stored[place.job.id].status_reason
            if place.released or reason is None or was == reason:
                continue           # released: not held by the queue (a pool's capacity may be)
            if (was or "").startswith("queued:"):
                moved[place.job.id] = reason          # stored together, below
                continue
            try:
                job = jobs.get_job(self.engine, job_id=place.job.id)
                if job.status == JobStatus.QUEUED.value and job.ray_submission_id is None:
                    self._note_waiting(job, reason)
            except Exception:
                log.exception("updating queued job %s failed", place.job.id)
        try:
            jobs.refresh_queue_reasons(self.engine, moved)
        except Exception:
            log.exception("updating the places of %d queued jobs failed", len(moved))

    def _submit_now(self, job: Job, spec: TrainingSpec,
                    where: placement.Placement | None = None) -> Job:
        where = where or self._placement(spec)
        try:
            submission_id = self.backend.submit(job.id, attempt=job.attempt or 1,
                                                env_vars=self.settings.runtime_env_vars(),
                                                placement=where.submit_kwargs)
        except BackendUnavailableError as exc:
            self._submit_deferred(job, exc)
            return jobs.get_job(self.engine, job_id=job.id)
        self._mark_submitted(job, submission_id, where)
        return jobs.get_job(self.engine, job_id=job.id)

    def _submit_packs(self, packer: Packer) -> None:
        """Submit the jobs a release held for packs: a group of one as its own Ray job,
        larger ones as one Ray job each (railyard.execution.pack)."""
        for pack in packer.packs():
            try:
                if len(pack) == 1:
                    self._submit_now(pack[0].job, pack[0].spec, pack[0].where)
                    continue
                members = [(held.job.id, held.job.attempt or 1) for held in pack]
                try:
                    submission_id = self.backend.submit_pack(
                        members, env_vars=self.settings.runtime_env_vars(),
                        placement=pack[0].where.submit_kwargs)
                except BackendUnavailableError as exc:
                    for held in pack:
                        self._submit_deferred(held.job, exc)
                    continue
                for held in pack:
                    self._mark_submitted(held.job, submission_id, held.where,
                                         packed_with=len(pack) - 1)
            except Exception:
                log.exception("submitting a pack of %d queued jobs failed", len(pack))

    def _submit_deferred(self, job: Job, exc: BackendUnavailableError) -> None:
        """The job stays QUEUED; reconcile() submits it once the cluster answers."""
        log.warning("job %s queued, Ray unavailable: %s", job.id, exc.message)
        jobs.add_event(self.engine, job_id=job.id, kind="submit_deferred",
                       message=exc.message)

    def _mark_submitted(self, job: Job, submission_id: str, where: placement.Placement, *,
                        packed_with: int = 0) -> None:
        jobs.transition(self.engine, job_id=job.id, status=JobStatus.PENDING,
                         allowed_from=frozenset({JobStatus.QUEUED}),
                         message=f"submitted to Ray as {submission_id} (pool: "
                                 f"{where.pool or 'any'}; {where.reason})"
                                 + (f", packed with {packed_with} other job(s)"
                                    if packed_with else "")
                                 + (f", attempt {job.attempt}" if (job.attempt or 1) > 1
                                    else ""),
                         ray_submission_id=submission_id, submitted_at=self.clock(),
                         pool=where.pool, pool_enforced=where.enforced,
                         placement_reason=where.reason, status_reason=None)

    def reconcile(self, job: Job, *, ray_status: BackendStatus | None = None) -> Job:
        """Bring a non-terminal job in line with what Ray knows about it: ``ray_status`` when
        the caller has it (the reconciler's one listing per tick), else asked of Ray."""
        if JobStatus(job.status).is_terminal():
            return job
        if job.status == JobStatus.QUEUED.value and job.ray_submission_id is None:
            return self._submit(job, TrainingSpec.model_validate(job.spec))
        if job.ray_submission_id is None:
            return job
        if ray_status is None:
            try:
                ray_status = self.backend.status(job.ray_submission_id)
            except BackendUnavailableError:
                return job
        if not ray_status.is_terminal:
            return self._check_waiting_and_timeouts(job, ray_status.status)
        fresh = jobs.get_job(self.engine, job_id=job.id)   # the runner may have just finished
        if JobStatus(fresh.status).is_terminal():
            return fresh
        if (fresh.attempt, fresh.ray_submission_id) != (job.attempt, job.ray_submission_id):
            return fresh                  # the runner queued a retry itself as its driver ended
        if ray_status.status == "STOPPED" and not jobs.is_pack(job.ray_submission_id):
            # A pack is stopped whole only for one of its jobs (a hung driver): the others
            # are retried like jobs whose node was lost.
            return self._end_job(job, JobStatus.CANCELLED, "Ray job was stopped")
        reason = (f"the Ray driver ended ({ray_status.status}) without recording a result"
                  + (f": {ray_status.message}" if ray_status.message else ""))
        return self._infrastructure_failure(fresh, reason)

    def _infrastructure_failure(self, job: Job, reason: str) -> Job:
        """The job's driver is gone (killed, its node lost, unknown to Ray): fail the attempt
        and retry the job if its budget allows."""
        log.warning("job %s attempt %s: %s", job.id, job.attempt, reason)
        if end_failed_attempt(self.engine, job=job, kind=FailureKind.INFRASTRUCTURE,
                              error=reason, phase=job.phase or "startup",
                              server_max_retries=self.settings.max_retries):
            retry = jobs.get_job(self.engine, job_id=job.id)
            return self._submit(retry, TrainingSpec.model_validate(retry.spec))
        return jobs.get_job(self.engine, job_id=job.id)

    def _check_waiting_and_timeouts(self, job: Job, ray_status: str) -> Job:
        """Explain a job that waits for its pool; fail one past its pending or run timeout."""
        spec = TrainingSpec.model_validate(job.spec)
        pending_limit, run_limit = self.timeouts(spec)
        now = self.clock()
        if ray_status == "PENDING" and job.status in (JobStatus.QUEUED.value,
                                                      JobStatus.PENDING.value):
            reason = job.status_reason
            if job.pool and job.pool_enforced:
                try:
                    reason = placement.pending_reason(job.pool, self.backend.node_pools())
                except BackendUnavailableError:
                    pass
            since = jobs.as_utc(job.submitted_at or job.created_at)
            if (now - since).total_seconds() > pending_limit:
                message = (f"{reason or 'waiting for Ray to start the job'}; gave up after the "
                           f"pending timeout of {pending_limit}s")
                self._stop_quietly(job)
                self._end_job(job, JobStatus.FAILED, message, phase="pending",
                              status_reason=reason)
            elif reason and reason != job.status_reason:
                jobs.update_job(self.engine, job_id=job.id, status_reason=reason)
            return jobs.get_job(self.engine, job_id=job.id)
        if job.status == JobStatus.RUNNING.value:
            started = jobs.as_utc(job.started_at)
            if started is not None and (now - started).total_seconds() > run_limit:
                message = f"run timeout of {run_limit}s exceeded in phase {job.phase}"
                self._stop_quietly(job)
                return self._end_job(job, JobStatus.FAILED, message,
                                     phase=job.phase or "startup")
            return self._check_heartbeat(job)
        return job

    def _end_job(self, job: Job, status: JobStatus, message: str, *, phase: str | None = None,
                 **fields: Any) -> Job:
        """Close the job's current attempt and the job itself with ``status``, not retried
        (a timeout, a Ray job stopped outside Railyard); a FAILED job gets the error and
        phase."""
        jobs.finish_attempt(self.engine, job_id=job.id, attempt=job.attempt or 1,
                             status=status, error=message, error_phase=phase,
                             ray_submission_id=job.ray_submission_id)
        if status is JobStatus.FAILED:
            fields.update(error=message, error_phase=phase)
        jobs.transition(self.engine, job_id=job.id, status=status, message=message, **fields)
        return jobs.get_job(self.engine, job_id=job.id)

    def _check_heartbeat(self, job: Job) -> Job:
        """A driver Ray still calls RUNNING that has not written its heartbeat for
        RAILYARD_HEARTBEAT_TIMEOUT_S is hung or cut off: stop it and fail (or retry) it."""
        beat = jobs.as_utc(job.heartbeat_at)
        if beat is None:
            return job
        silent = (self.clock() - beat).total_seconds()
        if silent <= self.settings.heartbeat_timeout_s:
            return job
        self._stop_quietly(job, whole_pack=True)     # a hung driver cannot stop itself
        return self._infrastructure_failure(
            job, f"no heartbeat from the job's driver for {silent:.0f}s "
                 f"(limit {self.settings.heartbeat_timeout_s:.0f}s); it was stopped")

    def attempts(self, job_id: str) -> list[JobAttempt]:
        """Every attempt of a job, first to last."""
        jobs.get_job(self.engine, job_id=job_id)          # 404 for an unknown job
        return jobs.list_attempts(self.engine, job_id=job_id)

    def _stop_quietly(self, job: Job, *, whole_pack: bool = False) -> None:
        try:
            self._stop_on_ray(job, whole_pack=whole_pack)
        except BackendUnavailableError:
            log.warning("could not stop Ray job %s", job.ray_submission_id)

    def _stop_on_ray(self, job: Job, *, whole_pack: bool = False) -> None:
        """Stop the job's Ray job. A pack's Ray job runs other live jobs too: a packed job's
        driver stops itself within a second of its job ending or moving on in the store
        (railyard.execution.driver.Heartbeat), and the pack is stopped only with its last
        live job, or ``whole_pack`` (a hung driver, which cannot stop itself)."""
        submission_id = job.ray_submission_id
        if not submission_id:
            return
        if jobs.is_pack(submission_id) and not whole_pack \
                and jobs.active_job_ids_on(self.engine, submission_id) - {job.id}:
            return
        self.backend.stop(submission_id)

    def reconcile_all(self) -> int:
        """Reconcile every non-terminal job (the background reconciler calls this), then
        release the queue; returns how many jobs past the queue it reconciled.

        Ray is asked ONCE per tick: one listing of every Ray job (``list_statuses``), read
        after the job table so every submission id read was already on Ray. A job the listing
        lacks is asked about alone (``status``: Ray lost it, or it was just submitted); with
        Ray unreachable, the jobs on Ray wait for the next tick and queued jobs stay QUEUED.
        Jobs that never left the queue are not loaded here: the queue's plan reads them."""
        active = jobs.list_jobs_to_reconcile(self.engine)
        statuses: dict[str, BackendStatus] | None = {}
        if active:
            try:
                statuses = self.backend.list_statuses()
                capacity.note_ray_statuses(statuses)
            except BackendUnavailableError as exc:
                log.warning("reconcile: cannot list Ray jobs: %s", exc.message)
                statuses = None
        count = 0
        for job in active:
            try:
                if job.ray_submission_id is None:
                    self.reconcile(job)
                elif statuses is not None:
                    self.reconcile(job, ray_status=statuses.get(job.ray_submission_id))
                count += 1
            except Exception:
                log.exception("reconciling job %s failed", job.id)
        self._release_queue()            # in the queue's order, after the jobs that ended
        self._register_missed()
        self._prune_ray_history()
        return count

    def _prune_ray_history(self) -> None:
        """At most once every PRUNE_INTERVAL_S: delete Ray's record of the jobs that finished
        longer than RAILYARD_RAY_JOB_RETENTION_S ago (railyard.control.ray_history)."""
        from datetime import timedelta

        now = self.clock()
        last = self._ray_pruned_at
        if last is not None and now - last < timedelta(seconds=ray_history.PRUNE_INTERVAL_S):
            return
        self._ray_pruned_at = now
        try:
            ray_history.prune(self.engine, self.backend, now=now,
                              retention_s=self.settings.ray_job_retention_s)
        except BackendUnavailableError as exc:
            log.warning("reconcile: cannot list Ray's ended jobs: %s", exc.message)
        except Exception:
            log.exception("deleting Ray's record of finished jobs failed")

    def _register_missed(self) -> None:
        """At most once a minute: register the SUCCEEDED jobs of the last day whose driver
        ended before it registered their model (railyard.jobstore.registry), so every
        success is a model version exactly once."""
        from datetime import timedelta

        from railyard.jobstore import registry

        now = self.clock()
        last = self._registry_swept_at
        if last is not None and now - last < timedelta(seconds=60):
            return
        self._registry_swept_at = now
        try:
            missed = registry.unregistered_succeeded(
                self.engine, created_after=now - timedelta(days=1),
                finished_before=now - timedelta(seconds=30))
            for job in missed:
                row = registry.register_succeeded(self.engine, job=job)
                log.info("registered job %s as %s/%s version %d (missed by its driver)",
                         job.id, job.owner, job.model_name, row.version)
        except Exception:
            log.exception("registering missed model versions failed")

    def get(self, job_id: str) -> Job:
        """A job, reconciled with Ray first."""
        return self.reconcile(jobs.get_job(self.engine, job_id=job_id))

    def cancel(self, job_id: str) -> Job:
        """Cancel a job in any non-terminal state and stop its Ray job."""
        job = jobs.get_job(self.engine, job_id=job_id)
        if JobStatus(job.status).is_terminal():
            raise ConflictError(
                f"job {job_id} is already {job.status}; only QUEUED, PENDING or RUNNING jobs "
                "can be cancelled")
        if not jobs.transition(self.engine, job_id=job_id, status=JobStatus.CANCELLED,
                                message="cancelled by request"):
            job = jobs.get_job(self.engine, job_id=job_id)
            raise ConflictError(f"job {job_id} finished ({job.status}) before it was cancelled")
        if job.ray_submission_id:
            jobs.finish_attempt(self.engine, job_id=job_id, attempt=job.attempt or 1,
                                 status=JobStatus.CANCELLED, error="cancelled by request",
                                 ray_submission_id=job.ray_submission_id)
        if job.ray_submission_id:
            try:
                self._stop_on_ray(job)
            except BackendUnavailableError as exc:
                jobs.add_event(self.engine, job_id=job_id, kind="cancel",
                                message=f"could not stop the Ray job yet: {exc.message}")
        return jobs.get_job(self.engine, job_id=job_id)

    def logs(self, job_id: str, *, attempt: int | None = None, offset: int = 0) -> str:
        """An attempt's log (default: the latest) from byte ``offset`` on, as a
        :class:`~railyard.artifacts.job_logs.LogText` (``.size``: the whole log's bytes). The
        durable copy the runner streams to the artifact store comes first, even while the job runs;
        for the latest attempt, else the job's published ``logs`` artifact, else Ray's live
        driver log."""
        from railyard.artifacts.artifact_store import ArtifactStore
        from railyard.artifacts.job_logs import LogText, log_uri, read_from

        job = jobs.get_job(self.engine, job_id=job_id)
        latest = job.attempt or 1
        attempt = attempt or latest
        if attempt > latest:
            raise NotFoundError(f"job {job_id} has no attempt {attempt}; its attempts are 1 to "
                                f"{latest}")
        artifacts = ArtifactStore(self.settings.resolved_artifact_root)
        uris = [(log_uri(artifacts, job.id, attempt), "durable")]
        if attempt == latest and (job.artifacts or {}).get("logs"):
            uris.append((job.artifacts["logs"], "artifact"))
        for uri, source in uris:
            try:
                return read_from(artifacts.get_bytes(uri), offset, source)
            except OSError:
                pass
        if attempt == latest and job.ray_submission_id:
            try:
                live = self.backend.logs(job.ray_submission_id).encode()
                return LogText(live[offset:].decode(errors="replace"), len(live), "ray")
            except BackendUnavailableError:
                pass
        return LogText("", 0, "none")
