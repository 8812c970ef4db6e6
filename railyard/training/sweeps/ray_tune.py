"""Hyperparameter sweeps with Ray Tune (``train.tune``).

Each trial fits the job's workflow with one point of the search space, reports holdout metrics
(intermediate ones per boosting round where the workflow reports them, so ASHA and the median
rule can stop bad trials early), and checkpoints its model. Every trial becomes a record on the
job; the best trial's model becomes the job's model. A failed trial is recorded with its error
and fails the job only when every trial fails.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray.tune import Callback

from railyard.spec import SearchDomain, TrainSpec, TuneSpec
from railyard.training.registry import get_workflow
from railyard.training.workflow import TrainContext, TrainingData, Workflow

if TYPE_CHECKING:
    from ray.tune import Result
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import TrialScheduler
    from ray.tune.search import Searcher

log = logging.getLogger(__name__)

# The metric a sweep optimises when the spec names none, by task.
MAIN_METRIC = {"binary": ("auc", "max"), "multiclass": ("accuracy", "max"),
               "regression": ("rmse", "min"), "forecasting": ("rmse", "min")}
INTERMEDIATE_REPORTS = 20
EXPERIMENT_NAME = "sweep"


@dataclass
class TrialRecord:
    """One trial as stored on the job."""

    trial_id: str
    params: dict[str, Any]
    metrics: dict[str, float]
    status: str                    # SUCCEEDED | STOPPED | FAILED
    duration_s: float | None
    error: str | None = None
    iterations: int = 0


@dataclass
class SweepResult:
    """What a sweep produced."""

    model: Any
    best_params: dict[str, Any]
    best_trial_id: str
    metric: str
    mode: str
    trials: list[TrialRecord] = field(default_factory=list)
    # Trials an earlier attempt of the job had already finished when this one restored it.
    resumed_trials: int = 0
    # ray_tune | driver (railyard.training.sweeps.in_driver), and whether every record in
    # ``trials`` was already stored, final, as its trial ended (the driver engine's are).
    engine: str = "ray_tune"
    recorded_live: bool = False


def tune_domain(domain: SearchDomain) -> Any:
    """The Ray Tune sampler for a spec domain."""
    from ray import tune

    lo_hi = domain.values
    return {"uniform": lambda: tune.uniform(*lo_hi), "loguniform": lambda: tune.loguniform(*lo_hi),
            "randint": lambda: tune.randint(*lo_hi), "choice": lambda: tune.choice(lo_hi),
            "grid": lambda: tune.grid_search(lo_hi)}[domain.kind]()


def sample_values(tune_spec: TuneSpec) -> dict[str, Any]:
    """One value from every domain (used to check parameter names and types at submit)."""
    return {name: d.values[0] for name, d in tune_spec.search_space.items()}


def _search_alg(tune_spec: TuneSpec, metric: str, mode: str) -> Searcher | None:
    if tune_spec.search_alg == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(metric=metric, mode=mode)
    if tune_spec.search_alg == "hyperopt":
        from ray.tune.search.hyperopt import HyperOptSearch

        return HyperOptSearch(metric=metric, mode=mode)
    return None  # random and grid: Ray Tune's basic variant generator


def _scheduler(tune_spec: TuneSpec) -> TrialScheduler | None:
    from ray.tune.schedulers import ASHAScheduler, MedianStoppingRule

    if tune_spec.scheduler == "asha":
        return ASHAScheduler(time_attr="training_iteration", max_t=INTERMEDIATE_REPORTS + 1,
                             grace_period=2, reduction_factor=2)
    if tune_spec.scheduler == "median":
        return MedianStoppingRule(time_attr="training_iteration", grace_period=2,
                                  min_samples_required=3)
    return None


def trial_resources(cpus: float, placement: dict[str, Any] | None) -> Any:
    """What each trial asks for: its CPUs and, for a job bound to a pool, a one-bundle
    placement group whose bundle only fits on that pool's nodes (Tune takes no label
    selector itself, but its PlacementGroupFactory passes one through to Ray)."""
    selector = (placement or {}).get("label_selector")
    if not selector:
        return {"CPU": cpus}
    from ray.tune import PlacementGroupFactory

    return PlacementGroupFactory([{"CPU": cpus}], strategy="PACK",
                                 bundle_label_selector=[dict(selector)])


def objective(tune_spec: TuneSpec, workflow: Workflow, data: TrainingData) -> tuple[str, str]:
    """(metric, mode) the sweep optimises: the spec's, else the task's main holdout metric."""
    if tune_spec.metric:
        return tune_spec.metric, tune_spec.mode or "max"
    return MAIN_METRIC[workflow.task(data)]


def eval_metric_for(metric: str) -> str | None:
    """The framework's own name for ``metric`` when it can score it every round."""
    return metric if metric in ("auc", "rmse", "logloss", "mae", "error") else None


def trial_workflow(train_spec: dict[str, Any], config: dict[str, Any],
                   eval_metric: str | None) -> Workflow:
    """The job's workflow with one point of the search space over its base params."""
    spec = TrainSpec.model_validate({**train_spec, "tune": None,
                                     "custom_params": {**train_spec["custom_params"], **config}})
    workflow_cls = get_workflow(spec.workflow_name)
    params = dict(spec.custom_params)
    if eval_metric and "eval_metric" in workflow_cls.param_names() \
            and "eval_metric" not in params:
        params["eval_metric"] = eval_metric
    return workflow_cls(spec.model_copy(update={"custom_params": params}))


def _trainable(config: dict[str, Any], *, train_spec: dict[str, Any], data: TrainingData,
               eval_metric: str | None) -> None:
    """One trial, in a Ray worker: fit with ``config`` over the base params, report, checkpoint."""
    from ray import tune

    workflow = trial_workflow(train_spec, config, eval_metric)

    def report(metrics: dict[str, float]) -> None:
        tune.report({**metrics, "final": 0})

    context = TrainContext(resources={"num_workers": 1}, on_iteration=report,
                           iteration_reports=INTERMEDIATE_REPORTS)
    model = workflow.fit(data, context)
    metrics = workflow.evaluate(model, data)
    with tempfile.TemporaryDirectory() as directory:
        workflow.save(model, Path(directory))
        tune.report({**metrics, "final": 1},
                    checkpoint=tune.Checkpoint.from_directory(directory))


def run_sweep(workflow: Workflow, data: TrainingData, train: TrainSpec, *,
              storage_path: str, on_trial: Callable[[TrialRecord], None] | None = None,
              placement: dict[str, Any] | None = None) -> SweepResult:
    """Run the sweep; return the best trial's model and every trial's record."""
    from ray import tune

    from railyard.data.fetch import ensure_ray

    tune_spec = train.tune
    assert tune_spec is not None
    ensure_ray()
    metric, mode = objective(tune_spec, workflow, data)
    space = {name: tune_domain(domain) for name, domain in tune_spec.search_space.items()}
    trainable = tune.with_resources(
        tune.with_parameters(_trainable, train_spec=train.model_dump(mode="json"), data=data,
                             eval_metric=eval_metric_for(metric)),
        trial_resources(tune_spec.cpus_per_trial, placement))
    # Tune saves its experiment state at most every 10 s by default; a retried attempt can
    # only skip trials whose end made it into that state, so save more often.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    experiment = f"{storage_path.rstrip('/')}/{EXPERIMENT_NAME}"
    resumed = 0
    if tune.Tuner.can_restore(experiment):
        # An earlier attempt of this job ran the sweep: go on from its state instead of
        # starting again (finished trials are kept; unfinished and errored ones run again).
        tuner = tune.Tuner.restore(experiment, trainable=trainable, param_space=space,
                                   resume_unfinished=True, resume_errored=True)
        try:
            # ResultGrid iterates through __getitem__ (no __iter__, which mypy needs)
            resumed = sum(1 for r in tuner.get_results()  # type: ignore[attr-defined, misc]
                          if r.error is None and (r.metrics or {}).get("final") == 1)
        except Exception:  # noqa: BLE001 - the count is for the record only
            resumed = 0
        log.info("restored the sweep of an earlier attempt from %s: %d trials already "
                 "finished", experiment, resumed)
        return _finish(tuner, workflow, metric, mode, resumed)
    tuner = tune.Tuner(
        trainable, param_space=space,
        tune_config=tune.TuneConfig(
            metric=metric, mode=mode, search_alg=_search_alg(tune_spec, metric, mode),
            scheduler=_scheduler(tune_spec),
            num_samples=1 if tune_spec.search_alg == "grid" else tune_spec.num_samples,
            max_concurrent_trials=tune_spec.max_concurrent_trials,
            time_budget_s=tune_spec.time_budget_s,
            # One trial's worker process serves the next: starting an actor per trial costs
            # more than a tiny model's whole fit.
            reuse_actors=True),
        run_config=tune.RunConfig(storage_path=storage_path, name=EXPERIMENT_NAME, verbose=0,
                                  callbacks=[_RecordTrials(on_trial)] if on_trial else None))
    return _finish(tuner, workflow, metric, mode, resumed)


def _finish(tuner: Any, workflow: Workflow, metric: str, mode: str,
            resumed: int) -> SweepResult:
    """Run ``tuner`` to the end; the best trial's model and every trial's record."""
    started = time.monotonic()
    grid = tuner.fit()
    log.info("sweep of %d trials took %.1fs", len(grid), time.monotonic() - started)
    records = [_record(result) for result in grid]
    finished = [r for r in zip(grid, records, strict=True) if r[1].status == "SUCCEEDED"]
    if not finished:
        errors = "; ".join(f"{r.trial_id}: {r.error}" for r in records if r.error)[:2000]
        raise RuntimeError(f"all {len(records)} trials failed or were stopped. {errors}")
    best_result, best = max(finished, key=lambda pair: pair[1].metrics.get(metric, float("nan"))
                            if mode == "max" else -pair[1].metrics.get(metric, float("nan")))
    with best_result.checkpoint.as_directory() as directory:
        model = workflow.load(Path(directory))
    return SweepResult(model=model, best_params=best.params, best_trial_id=best.trial_id,
                       metric=metric, mode=mode, trials=records, resumed_trials=resumed)


def _record(result: Result) -> TrialRecord:
    metrics = {k: float(v) for k, v in (result.metrics or {}).items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)
               and k not in ("final", "timestamp", "pid", "time_this_iter_s", "time_since_restore",
                             "timesteps_since_restore", "iterations_since_restore",
                             "training_iteration", "time_total_s", "done")}
    trial_id = (result.metrics or {}).get("trial_id") or Path(result.path).name
    if result.error is not None:
        status, error = "FAILED", f"{type(result.error).__name__}: {result.error}"[:2000]
    elif (result.metrics or {}).get("final") == 1:
        status, error = "SUCCEEDED", None
    else:
        status, error = "STOPPED", "stopped early by the scheduler"
    return TrialRecord(trial_id=str(trial_id), params=dict(result.config or {}), metrics=metrics,
                       status=status, duration_s=(result.metrics or {}).get("time_total_s"),
                       error=error,
                       iterations=int((result.metrics or {}).get("training_iteration", 0)))


class _RecordTrials(Callback):
    """A Tune callback that writes each trial's record as soon as it ends."""

    def __init__(self, on_trial: Callable[[TrialRecord], None]) -> None:
        self.on_trial = on_trial

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial,
                          **info: Any) -> None:
        self.on_trial(_live_record(trial, "SUCCEEDED"))

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial,
                       **info: Any) -> None:
        self.on_trial(_live_record(trial, "FAILED"))


def _live_record(trial: Trial, status: str) -> TrialRecord:
    result = trial.last_result or {}
    if status == "SUCCEEDED" and result.get("final") != 1:
        status = "STOPPED"
    return TrialRecord(trial_id=trial.trial_id, params=dict(trial.config or {}),
                       metrics={k: float(v) for k, v in result.items()
                                if isinstance(v, (int, float)) and not isinstance(v, bool)
                                and k in ("auc", "rmse", "logloss", "accuracy", "mae", "r2",
                                          "pr_auc", "mape", "smape", "macro_f1")},
                       status=status, duration_s=result.get("time_total_s"),
                       error=None if status != "FAILED" else str(trial.error_file or "error"),
                       iterations=int(result.get("training_iteration", 0)))
