"""In-cluster entrypoint of a training job.

    python -m railyard.execution.driver <job-id>                 # submitted by the API
    python -m railyard.execution.driver --spec spec.json         # `ray job submit ... -- python -m ...`

Runs the phases fetch → split → train → evaluate → publish, recording each on the job's
timeline. A failure becomes ``status=FAILED`` with the error and the phase it happened in.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from railyard.jobstore import jobs
from railyard.config import Settings, get_settings
from railyard.jobstore.engine import get_engine, migrate
from railyard.jobstore.retrying_store import RetryingStore, call_with_db_retry
from railyard.errors import RailyardError
from railyard.artifacts.job_logs import LogShipper, log_to_stdout
from railyard.jobstore.tables import JobStatus, utcnow
from railyard.spec import TrainingSpec, parse_spec
from railyard.artifacts.artifact_store import ArtifactStore

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


@dataclass(frozen=True)
class TrialRecorder:
    """Stores a sweep trial's record as it ends. Plain data (a URL and an id), because Ray
    Tune pickles its callbacks with the experiment state."""

    database_url: str
    job_id: str

    def __call__(self, trial: Any) -> None:
        self.many([trial])

    def many(self, trials: list[Any]) -> None:
        """Store several records in one write."""
        engine = get_engine(self.database_url)
        call_with_db_retry(lambda: jobs.record_trials(
            engine, job_id=self.job_id, trials=[asdict(t) for t in trials]))


def peak_rss_mb() -> float:
    """This process's peak resident memory, in MiB (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Heartbeat:
    """Writes ``job.heartbeat_at`` every ``interval_s`` from a daemon thread while the attempt
    runs, so the reconciler can tell a live driver from a hung or vanished one."""

    def __init__(self, engine: Engine, job_id: str, interval_s: float) -> None:
        import threading

        self.engine, self.job_id, self.interval_s = engine, job_id, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="railyard-heartbeat",
                                        daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                jobs.update_job(self.engine, job_id=self.job_id, heartbeat_at=utcnow())
            except Exception as exc:  # noqa: BLE001 - the next beat tries again
                log.warning("heartbeat not written: %s", str(exc).splitlines()[0][:200])

    def __enter__(self) -> "Heartbeat":
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
        self.db = RetryingStore(engine)
        self.attempt = 1
        self.artifacts = ArtifactStore(settings.resolved_artifact_root)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"railyard-{job_id}-"))
        self.log_path = self.workdir / "job.log"
        self.shipper: LogShipper | None = None

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
        except BaseException as exc:  # noqa: BLE001 - every failure is recorded on the job
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
                     f"warm driver (forked from pid {warm})" if warm else "cold driver")
            with Heartbeat(self.engine, self.job_id, self.settings.heartbeat_interval_s):
                return self._execute(job)

    def _execute(self, job: Any) -> int:
        try:
            results = self._phases(TrainingSpec.model_validate(job.spec))
        except JobCancelled:
            log.info("job %s was cancelled", self.job_id)
            self.upload_log()
            return 0
        except PhaseFailed as failure:
            from railyard.jobstore.retries import classify, end_failed_attempt

            kind, phase = classify(failure.error), failure.phase
            message = f"{type(failure.error).__name__}: {failure.error}"
            logs_uri = self.upload_log()
            if logs_uri:
                self.db.update_job(job_id=self.job_id, artifacts={"logs": logs_uri})
            current = self.db.get_job(job_id=self.job_id)
            retried = call_with_db_retry(lambda: end_failed_attempt(
                self.engine, job=current, kind=kind, error=message, phase=phase,
                server_max_retries=self.settings.max_retries))
            log.info("attempt %d failed (%s)%s", self.attempt, kind.value,
                     "; the job will be retried" if retried else "")
            return 1
        logs_uri = self.upload_log()
        results["artifacts"]["logs"] = logs_uri
        results["metrics"]["driver"] = {"peak_rss_mb": round(peak_rss_mb(), 1)}
        if self.db.transition(job_id=self.job_id, status=JobStatus.SUCCEEDED, phase=None,
                              **results):
            self.db.finish_attempt(job_id=self.job_id, attempt=self.attempt,
                                   status=JobStatus.SUCCEEDED)
        return 0

    def _phases(self, spec: TrainingSpec) -> dict[str, Any]:
        from railyard.data import fetch as data_plane
        from railyard.training.workflow import TrainingData, get_workflow

        workflow = get_workflow(spec.train.workflow_name)(spec.train)
        with self.phase("fetch"):
            plan = data_plane.plan_read(spec, derived=workflow.derived_columns)
            spec = self._right_size(spec, workflow, plan)
            if spec.train.resources.num_workers > 1 and workflow.streams_ray_datasets \
                    and spec.train.tune is None and not spec.train.partition_by:
                from railyard.training.streamed import read_streamed

                data_plane.ensure_ray()
                streamed = read_streamed(plan, workflow,
                                         features=list(spec.train.classifier_features),
                                         label=spec.train.label,
                                         ray_remote_args=self.worker_placement())
            else:
                streamed = None
                raw, engine = data_plane.read_table(
                    plan, in_process_max_bytes=self.settings.in_process_read_max_bytes,
                    ray_remote_args=self.worker_placement())
                table = workflow.prepare(raw)
                log.info("fetched %d rows with %s, columns %s", table.num_rows, engine,
                         table.column_names)
        if streamed is not None:
            return self._train_streamed(spec, workflow, plan, streamed)
        with self.phase("split"):
            train, holdout = data_plane.split_holdout(table, spec.data)
            stats = data_plane.describe(table, train, holdout, spec.train.label, plan=plan)
            stats.read_engine = engine
            self._store_split(stats)
        training_data = TrainingData(train=train, holdout=holdout,
                                     features=list(spec.train.classifier_features),
                                     label=spec.train.label)
        if spec.train.partition_by:
            return self._fanout(spec, training_data)
        with self.phase("train"):
            context = self._train_context(spec)
            sweep = None
            if spec.train.tune is not None:
                sweep = self._sweep(spec, workflow, training_data)
                model = sweep.model
                log.info("best trial %s: %s", sweep.best_trial_id, sweep.best_params)
            else:
                model = workflow.fit(training_data, context)
        with self.phase("evaluate"):
            metrics = workflow.evaluate(model, training_data)
            if sweep is not None:
                counts: dict[str, int] = {}
                for trial in sweep.trials:
                    counts[trial.status] = counts.get(trial.status, 0) + 1
                tune_summary = {"best_params": sweep.best_params,
                                "best_trial_id": sweep.best_trial_id, "metric": sweep.metric,
                                "mode": sweep.mode, "trials": counts,
                                "resumed_trials": sweep.resumed_trials,
                                "engine": sweep.engine}
            log.info("holdout metrics %s", metrics)
        with self.phase("publish"):
            results = self._publish(
                spec, workflow, model, metrics=metrics, task=workflow.task(training_data),
                schema=train.schema,
                reports=lambda directory: workflow.write_reports(model, training_data,
                                                                 directory))
        if sweep is not None:
            results["metrics"]["tune"] = tune_summary
        return results

    def _sweep(self, spec: TrainingSpec, workflow: Any, data: Any) -> Any:
        """train.tune: the sweep on the engine railyard.cluster.placement.sweep_engine picks (recorded
        on the timeline), every trial recorded on the job."""
        from railyard.cluster.placement import sweep_engine

        engine, reason = sweep_engine(spec, train_rows=data.train.num_rows,
                                      max_rows=self.settings.driver_sweep_max_rows)
        log.info("sweep engine %s: %s", engine, reason)
        self.db.add_event(job_id=self.job_id, kind="sweep_engine", message=f"{engine}: {reason}")
        recorder = TrialRecorder(self.settings.resolved_database_url, self.job_id)
        if engine == "driver":
            from railyard.training.sweeps.in_driver import run_in_driver

            earlier = call_with_db_retry(lambda: jobs.list_trials(self.engine,
                                                                   job_id=self.job_id))
            sweep = run_in_driver(workflow, data, spec.train, on_trials=recorder.many,
                                  earlier=earlier)
        else:
            from railyard.training.sweeps.ray_tune import run_sweep

            sweep = run_sweep(workflow, data, spec.train,
                              storage_path=self.artifacts.uri(self.job_id, "ray-tune"),
                              on_trial=recorder, placement=self.worker_placement())
        if not sweep.recorded_live:
            # Tune's final records (from its results) replace the live ones.
            recorder.many(sweep.trials)
        return sweep

    def _store_split(self, stats: Any) -> None:
        """Record the split's row counts and statistics on the job; no training rows is an
        error the spec's author can fix."""
        self.db.update_job(job_id=self.job_id, train_rows=stats.train_rows,
                           holdout_rows=stats.holdout_rows, dataset_stats=stats.to_dict())
        log.info("train rows %d, holdout rows %d", stats.train_rows, stats.holdout_rows)
        if stats.train_rows == 0:
            raise ValueError("no training rows left after filters and holdout split; "
                             "loosen data.filters or the holdout range")

    def _train_context(self, spec: TrainingSpec) -> Any:
        """What the workflow gets besides data: resources, progress, where Ray Train keeps
        its state, pool placement and the job's checkpoints."""
        from railyard.artifacts.checkpoints import CheckpointStore
        from railyard.training.workflow import TrainContext

        return TrainContext(resources=spec.train.resources.model_dump(),
                            on_progress=self.progress,
                            storage_path=self.artifacts.uri(self.job_id, "ray-train"),
                            worker_placement=self.worker_placement(),
                            # The same prefix for every attempt: a retry resumes from the
                            # last checkpoint of the attempt before it.
                            checkpoints=CheckpointStore(self.artifacts, self.job_id,
                                                        "checkpoints"),
                            checkpoint_interval_s=float(spec.lifecycle.checkpoint_interval_s
                                                        or self.settings.checkpoint_interval_s))

    def _right_size(self, spec: TrainingSpec, workflow: Any, plan: Any) -> TrainingSpec:
        """The spec with the number of training workers Railyard chose for a large Parquet
        source (railyard.cluster.placement.training_workers, from the bytes the read plan will read);
        recorded on the job's timeline."""
        from railyard.cluster.placement import training_workers

        first = plan.sources[0]
        if spec.train.resources.num_workers > 1 or not workflow.streams_ray_datasets \
                or first.kind != "parquet":
            return spec
        workers, reason = training_workers(
            spec, streams=True, data_bytes=first.estimated_bytes(),
            min_bytes=self.settings.distributed_min_bytes,
            auto_workers=self.settings.auto_num_workers)
        if reason is None:
            return spec
        log.info("right-sized: %s", reason)
        self.db.add_event(job_id=self.job_id, kind="right_sized", message=reason)
        resources = spec.train.resources.model_copy(update={"num_workers": workers})
        return spec.model_copy(update={"train": spec.train.model_copy(
            update={"resources": resources})})

    def _publish(self, spec: TrainingSpec, workflow: Any, model: Any, *,
                 metrics: dict[str, float], task: str, schema: Any,
                 reports: Any) -> dict[str, Any]:
        """Save the model, its reports and manifest to the artifact store; the job's results."""
        model_dir = self.workdir / "model"
        model_dir.mkdir()
        main_file = workflow.save(model, model_dir)
        manifest = {
            "job_id": self.job_id, "workflow": workflow.name, "framework": workflow.framework,
            "model_file": main_file, "features": list(spec.train.classifier_features),
            "feature_types": {f: str(schema.field(f).type)
                              for f in spec.train.classifier_features},
            "label": spec.train.label, "task": task,
            "metrics": {"holdout": metrics}, "spec_hash": spec.spec_hash(),
            "reports": reports(model_dir),
        }
        (model_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
        uris = {p.name: self.artifacts.put_file(p, self.job_id, "model", p.name)
                for p in sorted(model_dir.iterdir())}
        metrics_uri = self.artifacts.put_bytes(
            json.dumps({"holdout": metrics}, indent=2).encode(), self.job_id, "metrics.json")
        return {
            "metrics": {"holdout": metrics},
            "artifacts": {"model": uris[main_file], "manifest": uris["manifest.json"],
                          "model_dir": self.artifacts.uri(self.job_id, "model"),
                          "metrics": metrics_uri},
        }

    def _train_streamed(self, spec: TrainingSpec, workflow: Any, plan: Any,
                        streamed: Any) -> dict[str, Any]:
        """Several training workers fed by Ray Data: the rows never come to this driver
        (railyard.training.streamed)."""
        with self.phase("split"):
            self._store_split(streamed.stats(plan))
        with self.phase("train"):
            model = workflow.fit_streamed(streamed, self._train_context(spec))
        reports_dir = self.workdir / "reports"
        reports_dir.mkdir()
        with self.phase("evaluate"):
            metrics, reports = workflow.evaluate_streamed(model, streamed, reports_dir)
            log.info("holdout metrics %s", metrics)
        with self.phase("publish"):
            def copy_reports(directory: Path) -> dict[str, Any]:
                for path in reports_dir.iterdir():
                    path.rename(directory / path.name)
                return reports

            return self._publish(spec, workflow, model, metrics=metrics,
                                 task=streamed.task(), schema=streamed.schema,
                                 reports=copy_reports)


    def _fanout(self, spec: TrainingSpec, data: Any) -> dict[str, Any]:
        """train.partition_by: one model per partition, trained in parallel Ray tasks."""
        from railyard.training.partitioned import partition_key, run_fanout, summarise

        def on_model(record: Any) -> None:
            from dataclasses import asdict

            self.db.record_partition_model(job_id=self.job_id, model=asdict(record))

        column = spec.train.partition_by
        with self.phase("train"):
            records = run_fanout(data, spec.train, column=column,
                                 artifact_root=self.settings.resolved_artifact_root,
                                 job_id=self.job_id, on_model=on_model,
                                 placement=self.worker_placement())
        with self.phase("evaluate"):
            summary = summarise(records)
            log.info("fan-out over %s: %s", column, summary)
        with self.phase("publish"):
            manifest = {"job_id": self.job_id, "partitioned_by": column,
                        "workflow": spec.train.workflow_name, "spec_hash": spec.spec_hash(),
                        "partitions": {r.partition: {"model_dir": r.model_dir,
                                                     "key": partition_key(r.partition),
                                                     "status": r.status}
                                       for r in records}}
            manifest_uri = self.artifacts.put_bytes(json.dumps(manifest, indent=2).encode(),
                                                    self.job_id, "model", "manifest.json")
            metrics_uri = self.artifacts.put_bytes(
                json.dumps({"fanout": summary}, indent=2).encode(), self.job_id,
                "metrics.json")
        return {"metrics": {"holdout": {}, "fanout": summary},
                "artifacts": {"model": manifest_uri, "manifest": manifest_uri,
                              "model_dir": self.artifacts.uri(self.job_id, "model"),
                              "models": self.artifacts.uri(self.job_id, "models"),
                              "metrics": metrics_uri}}

def register_spec_job(engine: Engine, spec_path: str) -> str:
    """For ``ray job submit -- python -m railyard.execution.driver --spec F``: validate and store the job."""
    from railyard.training.submit_checks import validate_spec

    spec = parse_spec(json.loads(Path(spec_path).read_text()))
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
    return JobRun(engine, settings, job_id).execute()


if __name__ == "__main__":
    sys.exit(main())
