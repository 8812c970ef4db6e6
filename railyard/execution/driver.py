"""In-cluster entrypoint of a training job.

    python -m railyard.execution.driver <job-id>                 # submitted by the API
    python -m railyard.execution.driver --spec spec.json         # `ray job submit -- python -m …`

Runs the phases fetch → split → train → evaluate → publish, recording each on the job's
timeline. A failure becomes ``status=FAILED`` with the error and the phase it happened in.
The fetch phase plans the read and chooses how the rest runs (railyard.execution.plans:
gathered, streamed, sweep or fan-out); this module keeps the attempt's lifecycle.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from railyard.artifacts.artifact_store import ArtifactStore
from railyard.artifacts.job_logs import LogShipper, log_to_stdout
from railyard.config import Settings, get_settings
from railyard.data.allowed_paths import DataAccess
from railyard.errors import RailyardError
from railyard.execution.plans import choose_plan, right_size
from railyard.jobstore import jobs
from railyard.jobstore.engine import get_engine, migrate
from railyard.jobstore.retrying_store import RetryingStore, call_with_db_retry
from railyard.jobstore.tables import Job, JobStatus, utcnow
from railyard.spec import TrainingSpec, parse_spec

log = logging.getLogger("railyard.execution.driver")


class JobCancelled(Exception):
    """The job was cancelled while it ran; stop quietly."""


class PhaseFailed(Exception):
    """A phase raised; carries the phase name."""

    def __init__(self, phase: str, error: BaseException) -> None:
        super().__init__(f"{phase}: {error}")
        self.phase, self.error = phase, error


def ray_submission_id() -> str | None:
    """The Ray Jobs submission id of this driver, when it runs as a Ray job."""
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not raw:
        return None
    try:
        return json.loads(raw).get("metadata", {}).get("job_submission_id")
    except json.JSONDecodeError:
        return None


def job_access(job: Job) -> DataAccess | None:
    """What the token that submitted ``job`` may read (stored on the job at submit), for the
    fetch phase to apply again to every file it reads; None when the token did not narrow it."""
    if not job.data_prefixes and job.sql_connections is None:
        return None
    return DataAccess(team=job.submitted_by or job.owner,
                      data_prefixes=tuple(job.data_prefixes or ()),
                      sql_connections=(None if job.sql_connections is None
                                       else tuple(job.sql_connections)))


def peak_rss_mb() -> float:
    """This process's peak resident memory, in MiB (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Heartbeat:
    """Writes ``job.heartbeat_at`` every ``interval_s`` from a daemon thread while the attempt
    runs, so the reconciler can tell a live driver from a hung or vanished one.

    A packed driver (``watch``: its Ray job runs other jobs too, railyard.execution.pack) also
    reads its job every ``WATCH_INTERVAL_S`` and exits once the job is no longer this
    attempt's, running: cancelled, failed by a timeout, preempted. Ray's stop would end the
    pack's every job, so the API leaves the stopping to the driver (JobService._stop_on_ray).
    """

    WATCH_INTERVAL_S = 1.0

    def __init__(self, engine: Engine, job_id: str, interval_s: float, *,
                 watch: tuple[int, str] | None = None) -> None:
        import threading

        self.engine, self.job_id, self.interval_s = engine, job_id, interval_s
        self.watch = watch                  # (attempt, submission id) this driver runs
        self._stop = threading.Event()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="railyard-heartbeat",
                                        daemon=True)

    def closing(self) -> None:
        """The driver writes its attempt's end itself from now on: stop watching."""
        self._closing.set()

    def _beat(self) -> None:
        wait_s = min(self.interval_s, self.WATCH_INTERVAL_S) if self.watch else self.interval_s
        next_beat = time.monotonic() + self.interval_s
        while not self._stop.wait(wait_s):
            if self.watch and self._superseded():
                log.info("job %s is no longer this driver's to run (cancelled, ended or "
                         "moved to another attempt); exiting", self.job_id)
                for stream in (sys.stdout, sys.stderr):
                    stream.flush()
                os._exit(143)
            if time.monotonic() < next_beat:
                continue
            next_beat = time.monotonic() + self.interval_s
            try:
                jobs.update_job(self.engine, job_id=self.job_id, heartbeat_at=utcnow())
            except Exception as exc:  # noqa: BLE001 - the next beat tries again
                log.warning("heartbeat not written: %s", str(exc).splitlines()[0][:200])

    def _superseded(self) -> bool:
        try:
            job = jobs.get_job(self.engine, job_id=self.job_id)
        except Exception:  # noqa: BLE001 - unreadable now: keep running, ask again
            return False
        if self._closing.is_set() or self.watch is None:
            return False
        attempt, submission_id = self.watch
        return (job.status != JobStatus.RUNNING.value or (job.attempt or 1) != attempt
                or job.ray_submission_id != submission_id)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()


class JobRun:
    """One attempt at running a job."""

    def __init__(self, engine: Engine, settings: Settings, job_id: str) -> None:
        self.engine, self.settings, self.job_id = engine, settings, job_id
        # Every state write retries while the database is unreachable (a Postgres restart
        # delays the job's bookkeeping; it does not fail the job).
        self.db = RetryingStore(engine, deadline_s=settings.db_retry_window_s)
        self.attempt = 1
        self.artifacts = ArtifactStore(settings.resolved_artifact_root)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"railyard-{job_id}-"))
        self.log_path = self.workdir / "job.log"
        self.shipper: LogShipper | None = None
        self.heartbeat: Heartbeat | None = None

    # ------------------------------------------------------------------ bookkeeping
    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Record a phase's start and end; turn its exceptions into PhaseFailed."""
        current = self.db.get_job(job_id=self.job_id)
        if current.status == JobStatus.CANCELLED.value:
            raise JobCancelled()
        self.db.update_job(job_id=self.job_id, phase=name)
        self.db.add_event(job_id=self.job_id, kind="phase_started", phase=name)
        log.info("phase %s started", name)
        started = time.perf_counter()
        try:
            yield
        except (JobCancelled, PhaseFailed):
            raise
        except BaseException as exc:  # every failure is recorded on the job
            log.error("phase %s failed: %s\n%s", name, exc, traceback.format_exc())
            raise PhaseFailed(name, exc) from exc
        self.db.add_event(job_id=self.job_id, kind="phase_finished", phase=name,
                        message=f"{time.perf_counter() - started:.3f}s")
        log.info("phase %s finished in %.3fs", name, time.perf_counter() - started)

    def worker_placement(self) -> dict[str, Any]:
        """Ray options that keep this job's tasks and training workers on its pool."""
        from railyard.cluster.pools import worker_placement

        job = self.db.get_job(job_id=self.job_id)
        return worker_placement(job.pool) if job.pool and job.pool_enforced else {}

    def progress(self, message: str) -> None:
        """A throttled progress line from the workflow."""
        log.info("progress: %s", message)
        self.db.add_event(job_id=self.job_id, kind="progress", phase="train",
                        message=message)

    def _closing(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.closing()

    def upload_log(self) -> str | None:
        """Upload the job's log now (the shipper also streams it while the job runs); its URI,
        or None if no upload has succeeded."""
        return self.shipper.flush() if self.shipper is not None else None

    # ------------------------------------------------------------------ the run
    def execute(self) -> int:
        """Run every phase of the job's current attempt; return the process exit code."""
        log_to_stdout()
        job = self.db.get_job(job_id=self.job_id)
        mine = ray_submission_id()
        if mine and job.ray_submission_id and mine != job.ray_submission_id:
            log.info("job %s now runs as %s, not %s; this driver is stale", self.job_id,
                     job.ray_submission_id, mine)
            return 0
        self.attempt = job.attempt or 1
        started = self.db.transition(
            job_id=self.job_id, status=JobStatus.RUNNING,
            allowed_from=frozenset({JobStatus.QUEUED, JobStatus.PENDING}),
            started_at=utcnow(), heartbeat_at=utcnow(), status_reason=None,
            ray_submission_id=mine or job.ray_submission_id)
        if not started and job.status != JobStatus.RUNNING.value:
            log.info("job %s is %s; nothing to run", self.job_id, job.status)
            return 0
        # The shipper starts only now: a stale duplicate driver must not overwrite the log.
        with LogShipper(self.artifacts, self.job_id, self.attempt, self.log_path,
                        interval_s=self.settings.log_flush_interval_s) as self.shipper:
            self.db.start_attempt(job_id=self.job_id, attempt=self.attempt,
                                  ray_submission_id=mine or job.ray_submission_id)
            warm = os.environ.get("RAILYARD_WARM_FORKED_FROM")
            log.info("job %s attempt %d running in a %s", self.job_id, self.attempt,
                     f"warm driver (forked from pid {warm}; "
                     f"{os.environ.get('RAILYARD_WARM_FROZEN_OBJECTS', 0)} preloaded objects "
                     "kept out of garbage collection)" if warm else "cold driver")
            watch = (self.attempt, mine) if jobs.is_pack(mine) and mine else None
            self.heartbeat = Heartbeat(self.engine, self.job_id,
                                       self.settings.heartbeat_interval_s, watch=watch)
            with self.heartbeat:
                return self._execute(job)

    def _execute(self, job: Any) -> int:
        try:
            results = self._phases(TrainingSpec.model_validate(job.spec), job_access(job))
        except JobCancelled:
            log.info("job %s was cancelled", self.job_id)
            self.upload_log()
            return 0
        except PhaseFailed as failure:
            from railyard.jobstore.retries import classify, end_failed_attempt

            self._closing()
            kind, phase = classify(failure.error), failure.phase
            message = f"{type(failure.error).__name__}: {failure.error}"
            logs_uri = self.upload_log()
            if logs_uri:
                self.db.update_job(job_id=self.job_id, artifacts={"logs": logs_uri})
            current = self.db.get_job(job_id=self.job_id)
            retried = call_with_db_retry(lambda: end_failed_attempt(
                self.engine, job=current, kind=kind, error=message, phase=phase,
                server_max_retries=self.settings.max_retries),
                deadline_s=self.settings.db_retry_window_s)
            log.info("attempt %d failed (%s)%s", self.attempt, kind.value,
                     "; the job will be retried" if retried else "")
            return 1
        logs_uri = self.upload_log()
        results["artifacts"]["logs"] = logs_uri
        results["metrics"]["driver"] = {"peak_rss_mb": round(peak_rss_mb(), 1)}
        self._closing()
        if self.db.transition(job_id=self.job_id, status=JobStatus.SUCCEEDED, phase=None,
                              **results):
            self.db.finish_attempt(job_id=self.job_id, attempt=self.attempt,
                                   status=JobStatus.SUCCEEDED)
            self.register()
        return 0

    def register(self) -> None:
        """Register the SUCCEEDED job's model in the model registry and apply its promotion
        gate (railyard.execution.promotion); a failure here is logged, the job stays
        SUCCEEDED."""
        from railyard.execution.promotion import register_and_promote

        try:
            register_and_promote(self.engine, job_id=self.job_id,
                                 deadline_s=self.settings.db_retry_window_s)
        except Exception as exc:  # noqa: BLE001 - the training succeeded; say what failed
            log.error("could not register job %s in the model registry: %s", self.job_id, exc)
            self.upload_log()

    def record_lineage(self, spec: TrainingSpec, workflow: Any, read: Any) -> None:
        """Store what the job reads and runs (railyard.data.lineage) on the job; a rerun's
        pinned files must be exactly those (a ConflictError naming the file otherwise)."""
        from railyard.data import lineage

        job = self.db.get_job(job_id=self.job_id)
        try:
            record = lineage.record(read, spec=spec.model_dump(mode="json"),
                                    spec_hash=spec.spec_hash(), workflow=workflow,
                                    ran_at=utcnow())
        except Exception as exc:
            if job.pinned_files is not None:
                raise
            log.warning("lineage not recorded: %s", exc)
            record = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
        self.db.update_job(job_id=self.job_id, lineage=record)
        if job.pinned_files is not None:
            lineage.check_pins(job.pinned_files, lineage.pins(record),
                               job_id=job.rerun_of or self.job_id)

    def _phases(self, spec: TrainingSpec, access: DataAccess | None = None) -> dict[str, Any]:
        """Fetch (plan the read, right-size, choose the plan, read), then the plan's phases;
        the job's results. The read plan checks again what the job may read: every local file,
        links resolved, against the server's prefixes and ``access`` (the submitting token's)."""
        from railyard.data import fetch as data_plane
        from railyard.training.registry import get_workflow

        workflow = get_workflow(spec.train.workflow_name)(spec.train)
        with self.phase("fetch"):
            read = data_plane.plan_read(spec, derived=workflow.derived_columns, access=access)
            spec = right_size(self, spec, workflow, read)
            plan = choose_plan(spec, workflow)(self, spec, workflow, read)
            self.record_lineage(spec, workflow, read)
            plan.fetch()
        results = plan.run()
        if spec.promotion is not None and "promotion" not in results["metrics"]:
            from railyard.execution.promotion import not_scored

            results["metrics"]["promotion"] = decision = not_scored(spec, plan.name)
            self.db.add_event(job_id=self.job_id, kind="promotion", phase="evaluate",
                              message=f"keep {decision['alias']}: {decision['reason']}")
        return results


def register_spec_job(engine: Engine, spec_path: str) -> str:
    """For ``ray job submit -- python -m railyard.execution.driver --spec F``: validate and
    store the job."""
    from railyard.data.read_plan import check_data_files
    from railyard.training.submit_checks import validate_spec

    spec = parse_spec(json.loads(Path(spec_path).read_text()))
    check_data_files(spec.data)      # before any file is opened: links resolved
    validate_spec(spec)
    job = jobs.create_job(engine, spec=spec, origin="ray-job-submit",
                           status=JobStatus.PENDING, ray_submission_id=ray_submission_id())
    return job.id


def main(argv: list[str] | None = None) -> int:
    """Command-line entrypoint."""
    parser = argparse.ArgumentParser(prog="python -m railyard.execution.driver")
    parser.add_argument("job_id", nargs="?", help="id of a job stored by the API")
    parser.add_argument("--spec", help="a training spec JSON file (registers a new job)")
    args = parser.parse_args(argv)
    if bool(args.job_id) == bool(args.spec):
        parser.error("give either a job id or --spec FILE")
    settings = get_settings()
    engine = get_engine(settings.resolved_database_url)
    if args.spec:
        migrate(settings.resolved_database_url)
        try:
            job_id = register_spec_job(engine, args.spec)
        except RailyardError as exc:
            print(f"railyard: rejected spec: {exc.message}", file=sys.stderr)
            return 2
        print(f"railyard job id: {job_id}", flush=True)
    else:
        job_id = args.job_id
    run = JobRun(engine, settings, job_id)
    try:
        return run.execute()
    finally:
        # The attempt's scratch (log copy, model before upload, reports) is in the store now.
        shutil.rmtree(run.workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
