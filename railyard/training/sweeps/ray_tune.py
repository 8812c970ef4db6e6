"""Hyperparameter sweeps with Ray Tune (``train.tune``).

Each trial fits the job's workflow with one point of the search space, reports holdout metrics
(intermediate ones per boosting round where the workflow reports them, so ASHA and the median
rule can stop bad trials early), and checkpoints its model. Every trial becomes a record on the
job; the best trial's model becomes the job's model. A failed trial is recorded with its error
and fails the job only when every trial fails.

Nothing is unpickled from the artifact store (railyard.artifacts.integrity). A trial reports the
SHA-256 of its checkpoint's files with its final result, which reaches the driver through Ray,
not the store; the best trial's checkpoint is loaded only from a private copy of files that
match. A retried attempt does not restore Ray Tune's experiment state (pickles in the store):
it resumes from the trial records the earlier attempt stored in the job database. Those
trials are kept as recorded and only the rest run, in a new experiment: ``num_samples`` less
the kept ones, or the grid points no kept trial covered (a resumed Optuna or HyperOpt search
starts afresh for the remaining trials; ASHA and the median rule see only the new ones). When
a kept trial is the best, its configuration is fitted once more in the driver, as the driver
engine does (railyard.training.sweeps.in_driver).
"""

from __future__ import annotations

import itertools
import json
import logging
import shutil
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray.tune import Callback

from railyard.artifacts.integrity import (
    ArtifactIntegrityError,
    checked_copy,
    directory_digests,
    read_files,
)
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
EXPERIMENT_NAME = "sweep"      # each attempt's experiment is sweep-<random>
# A trial's final result: the SHA-256 of each file of its checkpoint, as JSON.
CHECKPOINT_DIGESTS = "checkpoint_sha256"
# A resumed grid sweep's remaining grid points, as one grid domain of whole configurations.
GRID_KEY = "__railyard_grid"


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


def flat_config(config: dict[str, Any] | None) -> dict[str, Any]:
    """A trial's parameters (a resumed grid sweep's grid point merged in)."""
    config = dict(config or {})
    point = config.pop(GRID_KEY, None) or {}
    return {**config, **point}


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

    workflow = trial_workflow(train_spec, flat_config(config), eval_metric)

    def report(metrics: dict[str, float]) -> None:
        tune.report({**metrics, "final": 0})

    context = TrainContext(resources={"num_workers": 1}, on_iteration=report,
                           iteration_reports=INTERMEDIATE_REPORTS)
    model = workflow.fit(data, context)
    metrics = workflow.evaluate(model, data)
    with tempfile.TemporaryDirectory() as directory:
        workflow.save(model, Path(directory))
        digests = json.dumps(directory_digests(Path(directory)), sort_keys=True)
        tune.report({**metrics, "final": 1, CHECKPOINT_DIGESTS: digests},
                    checkpoint=tune.Checkpoint.from_directory(directory))


def run_sweep(workflow: Workflow, data: TrainingData, train: TrainSpec, *,
              storage_path: str, on_trial: Callable[[TrialRecord], None] | None = None,
              placement: dict[str, Any] | None = None,
              earlier: list[dict[str, Any]] | None = None) -> SweepResult:
    """Run the sweep; return the best trial's model and every trial's record. ``earlier``:
    the trial records an earlier attempt of the job stored (railyard.jobstore.jobs.list_trials);
    when not given they are read through ``on_trial`` when it names the job (its
    ``database_url`` and ``job_id``, as railyard.execution.plans.sweep.TrialRecorder does)."""
    from ray import tune

    from railyard.data.fetch import ensure_ray

    tune_spec = train.tune
    assert tune_spec is not None
    ensure_ray()
    metric, mode = objective(tune_spec, workflow, data)
    kept = kept_records(earlier if earlier is not None else _earlier_records(on_trial))
    space, num_samples = remaining_space(tune_spec, kept)
    train_json = train.model_dump(mode="json")
    eval_metric = eval_metric_for(metric)
    ran: list[tuple[TrialRecord, Result | None]] = [(record, None) for record in kept]
    if kept:
        log.info("resuming the sweep: %d trials kept from an earlier attempt, %s to run", len(kept),
                 f"{num_samples} more" if GRID_KEY not in space
                 else f"{len(space[GRID_KEY]['grid_search'])} grid points")
    if num_samples:
        trainable = tune.with_resources(
            tune.with_parameters(_trainable, train_spec=train_json, data=data,
                                 eval_metric=eval_metric),
            trial_resources(tune_spec.cpus_per_trial, placement))
        tuner = tune.Tuner(
            trainable, param_space=space,
            tune_config=tune.TuneConfig(
                metric=metric, mode=mode, search_alg=_search_alg(tune_spec, metric, mode),
                scheduler=_scheduler(tune_spec), num_samples=num_samples,
                max_concurrent_trials=tune_spec.max_concurrent_trials,
                time_budget_s=tune_spec.time_budget_s,
                # One trial's worker process serves the next: starting an actor per trial
                # costs more than a tiny model's whole fit.
                reuse_actors=True),
            # A new experiment per attempt: an earlier attempt's state is never read back.
            run_config=tune.RunConfig(storage_path=storage_path,
                                      name=f"{EXPERIMENT_NAME}-{uuid.uuid4().hex[:8]}",
                                      verbose=0,
                                      callbacks=[_RecordTrials(on_trial)] if on_trial else None))
        started = time.monotonic()
        grid = tuner.fit()
        log.info("sweep of %d trials took %.1fs", len(grid), time.monotonic() - started)
        results = [grid[i] for i in range(len(grid))]  # ResultGrid has no __iter__ for mypy
        ran += [(_record(result), result) for result in results]
    records = [record for record, _ in ran]
    finished = [pair for pair in ran if pair[0].status == "SUCCEEDED"]
    if not finished:
        errors = "; ".join(f"{r.trial_id}: {r.error}" for r in records if r.error)[:2000]
        raise RuntimeError(f"all {len(records)} trials failed or were stopped. {errors}")
    best, best_result = max(finished, key=lambda pair: pair[0].metrics.get(metric, float("nan"))
                            if mode == "max" else -pair[0].metrics.get(metric, float("nan")))
    if best_result is None:  # a kept trial: fit its configuration once more
        log.info("the best trial %s ran in an earlier attempt: fitting its configuration again",
                 best.trial_id)
        model = trial_workflow(train_json, best.params, eval_metric).fit(
            data, TrainContext(resources={"num_workers": 1}))
    else:
        model = load_trial_checkpoint(workflow, best_result, best.trial_id)
    return SweepResult(model=model, best_params=best.params, best_trial_id=best.trial_id,
                       metric=metric, mode=mode, trials=records, resumed_trials=len(kept))


def kept_records(earlier: list[dict[str, Any]]) -> list[TrialRecord]:
    """The trials an earlier attempt finished (succeeded, stopped early or failed): kept as
    they were recorded, not run again."""
    fields = TrialRecord.__dataclass_fields__
    return [TrialRecord(**{k: v for k, v in record.items() if k in fields})
            for record in earlier
            if record.get("status") in ("SUCCEEDED", "STOPPED", "FAILED")
            and record.get("trial_id")]


def remaining_space(tune_spec: TuneSpec, kept: list[TrialRecord]) -> tuple[dict[str, Any], int]:
    """(param_space, num_samples) of the trials still to run after the ``kept`` ones: the whole
    sweep when nothing is kept; else the non-grid domains with ``num_samples`` less the kept
    trials, or, with grid domains, one grid domain (GRID_KEY) over the grid points each
    still owed (a point is owed once per sample)."""
    from ray import tune

    domains = tune_spec.search_space
    samples = 1 if tune_spec.search_alg == "grid" else tune_spec.num_samples
    if not kept:
        return {name: tune_domain(d) for name, d in domains.items()}, samples
    space = {name: tune_domain(d) for name, d in domains.items() if d.kind != "grid"}
    grid_names = [name for name, d in domains.items() if d.kind == "grid"]
    if not grid_names:
        return space, max(0, samples - len(kept))
    done = Counter(tuple(json.dumps(r.params.get(n)) for n in grid_names) for r in kept)
    owed: list[dict[str, Any]] = []
    for values in itertools.product(*(domains[n].values for n in grid_names)):
        key = tuple(json.dumps(v) for v in values)
        owed += [dict(zip(grid_names, values, strict=True))] * max(0, samples - done[key])
    if not owed:
        return space, 0
    return {**space, GRID_KEY: tune.grid_search(owed)}, 1


def _earlier_records(on_trial: Any) -> list[dict[str, Any]]:
    """The job's trial records in the job database, when ``on_trial`` names the job."""
    url, job_id = getattr(on_trial, "database_url", None), getattr(on_trial, "job_id", None)
    if not isinstance(url, str) or not isinstance(job_id, str):
        return []
    from railyard.jobstore import jobs
    from railyard.jobstore.engine import get_engine
    from railyard.jobstore.retrying_store import call_with_db_retry

    return call_with_db_retry(lambda: jobs.list_trials(get_engine(url), job_id=job_id))


def load_trial_checkpoint(workflow: Workflow, result: Any, trial_id: str) -> Any:
    """The model in a trial's checkpoint, loaded from a private copy of its files once they
    match the digests the trial reported (an ArtifactIntegrityError naming the file else)."""
    checkpoint = result.checkpoint
    where = f"the checkpoint of trial {trial_id} at {checkpoint.path}"
    reported = (result.metrics or {}).get(CHECKPOINT_DIGESTS)
    if not reported:
        raise ArtifactIntegrityError(f"{where}: the trial reported no digests of its files; "
                                     "refusing to load it")
    files = read_files(checkpoint.path, filesystem=checkpoint.filesystem)
    directory = checked_copy(checkpoint.path, files, json.loads(reported))
    try:
        return workflow.load(directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


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
    return TrialRecord(trial_id=str(trial_id), params=flat_config(result.config),
                       metrics=metrics,
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
    return TrialRecord(trial_id=trial.trial_id, params=flat_config(trial.config),
                       metrics={k: float(v) for k, v in result.items()
                                if isinstance(v, (int, float)) and not isinstance(v, bool)
                                and k in ("auc", "rmse", "logloss", "accuracy", "mae", "r2",
                                          "pr_auc", "mape", "smape", "macro_f1")},
                       status=status, duration_s=result.get("time_total_s"),
                       error=None if status != "FAILED" else str(trial.error_file or "error"),
                       iterations=int(result.get("training_iteration", 0)))
