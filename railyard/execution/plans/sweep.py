"""The sweep plan (``train.tune``): the rows are read into this driver, the trials run in it
(threads) or on Ray Tune, every trial is recorded on the job, and the best model is
evaluated and published."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from railyard.execution.plans.base import log
from railyard.execution.plans.gathered import GatheredPlan
from railyard.jobstore import jobs
from railyard.jobstore.engine import get_engine
from railyard.jobstore.retrying_store import call_with_db_retry

if TYPE_CHECKING:
    from railyard.training.sweeps.ray_tune import SweepResult
    from railyard.training.workflow import TrainingData


@dataclass(frozen=True)
class TrialRecorder:
    """Stores a sweep trial's record as it ends. Plain data (a URL and an id), because Ray
    Tune pickles its callbacks with the experiment state."""

    database_url: str
    job_id: str

    def __call__(self, trial: Any) -> None:
        """Store one record."""
        self.many([trial])

    def many(self, trials: list[Any]) -> None:
        """Store several records in one write."""
        engine = get_engine(self.database_url)
        call_with_db_retry(lambda: jobs.record_trials(
            engine, job_id=self.job_id, trials=[asdict(t) for t in trials]))


class SweepPlan(GatheredPlan):
    """The gathered plan with a sweep in place of one fit; ``metrics.tune`` summarises it."""

    name = "sweep"
    sweep: SweepResult
    tune_summary: dict[str, Any]

    def run(self) -> dict[str, Any]:
        """Split, sweep, evaluate the best model and publish it; the job's results."""
        results = super().run()
        results["metrics"]["tune"] = self.tune_summary
        return results

    def train(self, data: TrainingData) -> Any:
        """The best trial's model (inside the train phase)."""
        self.sweep = sweep = self.run_sweep(data)
        log.info("best trial %s: %s", sweep.best_trial_id, sweep.best_params)
        return sweep.model

    def evaluate(self, model: Any, data: TrainingData) -> dict[str, float]:
        """The best model's holdout metrics, and the sweep's summary."""
        metrics = super().evaluate(model, data)
        sweep = self.sweep
        counts: dict[str, int] = {}
        for trial in sweep.trials:
            counts[trial.status] = counts.get(trial.status, 0) + 1
        self.tune_summary = {"best_params": sweep.best_params,
                             "best_trial_id": sweep.best_trial_id, "metric": sweep.metric,
                             "mode": sweep.mode, "trials": counts,
                             "resumed_trials": sweep.resumed_trials,
                             "engine": sweep.engine}
        return metrics

    def run_sweep(self, data: TrainingData) -> SweepResult:
        """train.tune: the sweep on the engine railyard.cluster.placement.sweep_engine picks
        (recorded on the timeline), every trial recorded on the job."""
        from railyard.cluster.placement import sweep_engine

        job, spec, workflow = self.job, self.spec, self.workflow
        engine, reason = sweep_engine(spec, train_rows=data.train.num_rows,
                                      max_rows=job.settings.driver_sweep_max_rows)
        log.info("sweep engine %s: %s", engine, reason)
        job.db.add_event(job_id=job.job_id, kind="sweep_engine", message=f"{engine}: {reason}")
        recorder = TrialRecorder(job.settings.resolved_database_url, job.job_id)
        if engine == "driver":
            from railyard.training.sweeps.in_driver import run_in_driver

            earlier = call_with_db_retry(lambda: jobs.list_trials(job.engine,
                                                                   job_id=job.job_id))
            sweep = run_in_driver(workflow, data, spec.train, on_trials=recorder.many,
                                  earlier=earlier)
        else:
            from railyard.training.sweeps.ray_tune import run_sweep

            sweep = run_sweep(workflow, data, spec.train,
                              storage_path=job.artifacts.uri(job.job_id, "ray-tune"),
                              on_trial=recorder, placement=job.worker_placement())
        if not sweep.recorded_live:
            # Tune's final records (from its results) replace the live ones.
            recorder.many(sweep.trials)
        return sweep
