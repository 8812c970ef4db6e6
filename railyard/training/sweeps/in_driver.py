"""Small sweeps in the job's driver, without Ray Tune (``train.tune.engine: driver``).

Ray Tune runs every trial through its controller and an actor, and records it in its
experiment state; on a 2-core node that bookkeeping costs ~150 ms per trial, ten times the fit
of a model on a few thousand rows. A random or grid search with the FIFO scheduler needs none
of that machinery: this engine draws the same configurations with Ray Tune's own variant
generator and fits them on a few threads of the driver, which already holds the data.

What it keeps of a Tune sweep: every trial is a record on the job (stored as it ends), a
failed trial fails the job only when every trial fails, and the best trial's model becomes the
job's. A retried attempt resumes: the configurations are drawn from a seed fixed by the spec,
so the trials the earlier attempt recorded as SUCCEEDED are not run again (their records are
the experiment state); if the best of them wins, its configuration is fitted once more.
"""

from __future__ import annotations

import json
import logging
import math
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

import numpy as np

from railyard.spec import TrainSpec
from railyard.training.sweeps.ray_tune import (
    SweepResult,
    TrialRecord,
    eval_metric_for,
    objective,
    trial_workflow,
    tune_domain,
)
from railyard.training.workflow import TrainContext, TrainingData, Workflow, node_cpus

log = logging.getLogger(__name__)
RECORD_INTERVAL_S = 0.5


def sweep_seed(train: TrainSpec) -> int:
    """A seed fixed by the train section, so a retried attempt draws the same trials."""
    return zlib.crc32(json.dumps(train.model_dump(mode="json"), sort_keys=True).encode())


def trial_configs(train: TrainSpec, seed: int) -> list[dict[str, Any]]:
    """The sweep's configurations, in trial order: ``num_samples`` draws (one pass over the
    grid for search_alg grid), each covering every grid combination, as Ray Tune draws them."""
    from ray.tune.search.variant_generator import generate_variants

    tune_spec = train.tune
    assert tune_spec is not None
    space = {name: tune_domain(domain) for name, domain in tune_spec.search_space.items()}
    state = np.random.RandomState(seed)
    samples = 1 if tune_spec.search_alg == "grid" else tune_spec.num_samples
    return [{name: _native(value) for name, value in config.items()}
            for _ in range(samples)
            for _, config in generate_variants(space, random_state=state)]


def trial_threads(train: TrainSpec, cpus: int | None = None) -> int:
    """How many trials run at once: the node's CPUs over ``cpus_per_trial`` (at least one
    CPU each: a thread is not a fraction of a core), capped by ``max_concurrent_trials``."""
    tune_spec = train.tune
    assert tune_spec is not None
    cpus = cpus or node_cpus()
    threads = max(1, int(cpus // max(1.0, tune_spec.cpus_per_trial)))
    return min(threads, tune_spec.max_concurrent_trials or threads)


def run_in_driver(workflow: Workflow, data: TrainingData, train: TrainSpec, *,
                  on_trials: Callable[[list[TrialRecord]], None] | None = None,
                  earlier: list[dict[str, Any]] | None = None,
                  threads: int | None = None) -> SweepResult:
    """Run the sweep on threads of this process; the best trial's model and every record.

    ``on_trials`` gets the records of the trials that ended, at most every
    ``RECORD_INTERVAL_S`` and once at the end (one database write per batch, not per trial:
    a tiny trial takes a few milliseconds). ``earlier``: trial records an earlier attempt of
    the job stored; its SUCCEEDED trials with the same id and params are kept, not run again.
    """
    tune_spec = train.tune
    assert tune_spec is not None
    metric, mode = objective(tune_spec, workflow, data)
    configs = trial_configs(train, sweep_seed(train))
    ids = [f"trial_{index:05d}" for index in range(len(configs))]
    kept = _kept_records(earlier or [], dict(zip(ids, configs, strict=True)))
    train_spec = train.model_dump(mode="json")
    cpus_each = max(1, int(tune_spec.cpus_per_trial))
    started = time.monotonic()

    def fit(config: dict[str, Any]) -> tuple[Workflow, Any]:
        trial = trial_workflow(train_spec, config, eval_metric_for(metric))
        return trial, trial.fit(data, TrainContext(resources={"num_workers": 1,
                                                               "cpus_per_worker": cpus_each}))

    def run_trial(trial_id: str, config: dict[str, Any]) -> tuple[TrialRecord, Any]:
        begun = time.perf_counter()
        try:
            trial, model = fit(config)
            metrics = {k: float(v) for k, v in trial.evaluate(model, data).items()}
        except Exception as exc:  # noqa: BLE001 - a failed trial is a record, not the job's end
            return TrialRecord(trial_id=trial_id, params=config, metrics={}, status="FAILED",
                               duration_s=time.perf_counter() - begun,
                               error=f"{type(exc).__name__}: {exc}"[:2000]), None
        status, error = "SUCCEEDED", None
        if not math.isfinite(metrics.get(metric, float("nan"))):
            status, error = "FAILED", f"no finite holdout {metric} to rank the trial by"
        return TrialRecord(trial_id=trial_id, params=config, metrics=metrics, status=status,
                           duration_s=time.perf_counter() - begun, error=error,
                           iterations=1), model

    records: dict[str, TrialRecord] = dict(kept)
    best: tuple[float, str, Any] | None = None
    for record in kept.values():
        best = _better(best, _score(record, metric, mode), record.trial_id, None)
    todo = [(i, c) for i, c in zip(ids, configs, strict=True) if i not in kept]
    workers = max(1, min(threads or trial_threads(train), len(todo) or 1))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="railyard-trial") as pool:
        futures = [pool.submit(run_trial, trial_id, config) for trial_id, config in todo]
        unrecorded: list[TrialRecord] = []
        recorded_at = time.monotonic()
        for ended, future in enumerate(as_completed(futures), start=1):
            record, model = future.result()
            records[record.trial_id] = record
            unrecorded.append(record)
            if record.status == "SUCCEEDED":
                best = _better(best, _score(record, metric, mode), record.trial_id, model)
            if on_trials is not None and (ended == len(futures)
                                          or time.monotonic() - recorded_at >= RECORD_INTERVAL_S):
                on_trials(unrecorded)
                unrecorded, recorded_at = [], time.monotonic()
    ordered = [records[i] for i in ids if i in records]
    log.info("driver sweep of %d trials (%d kept from an earlier attempt) took %.2fs",
             len(ordered), len(kept), time.monotonic() - started)
    if best is None:
        errors = "; ".join(f"{r.trial_id}: {r.error}" for r in ordered if r.error)[:2000]
        raise RuntimeError(f"all {len(ordered)} trials failed. {errors}")
    _, best_id, model = best
    if model is None:  # the best trial ran in an earlier attempt: fit its configuration again
        _, model = fit(records[best_id].params)
    return SweepResult(model=model, best_params=records[best_id].params, best_trial_id=best_id,
                       metric=metric, mode=mode, trials=ordered, resumed_trials=len(kept),
                       engine="driver", recorded_live=on_trials is not None)


def _kept_records(earlier: list[dict[str, Any]],
                  configs: dict[str, dict[str, Any]]) -> dict[str, TrialRecord]:
    """The earlier attempt's finished trials that are trials of this sweep."""
    kept = {}
    for record in earlier:
        trial_id = record.get("trial_id")
        if record.get("status") == "SUCCEEDED" and trial_id in configs \
                and record.get("params") == configs[trial_id]:
            kept[trial_id] = TrialRecord(**{k: record[k] for k in TrialRecord.__dataclass_fields__
                                            if k in record})
    return kept


def _score(record: TrialRecord, metric: str, mode: str) -> float:
    value = record.metrics.get(metric, float("nan"))
    return value if mode == "max" else -value


def _better(best: tuple[float, str, Any] | None, score: float, trial_id: str,
            model: Any) -> tuple[float, str, Any] | None:
    """The better of the best so far and this trial (the earlier trial on a tie)."""
    if not math.isfinite(score):
        return best
    if best is None or score > best[0] or (score == best[0] and trial_id < best[1]):
        return score, trial_id, model
    return best


def _native(value: Any) -> Any:
    """A numpy scalar as the Python value JSON stores (ints stay ints)."""
    return value.item() if isinstance(value, np.generic) else value
