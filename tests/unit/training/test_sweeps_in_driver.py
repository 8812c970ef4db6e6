"""The driver sweep engine (railyard.training.sweeps.in_driver) on real xgboost fits, without Ray
running: the configurations Ray Tune would draw, every trial recorded, the best model, resume."""

from __future__ import annotations

import numpy as np
import pytest

from railyard.cluster.placement import sweep_engine
from railyard.data.demo import fraud_table
from railyard.spec import TrainSpec, parse_spec
from railyard.training.registry import get_workflow
from railyard.training.sweeps.in_driver import (
    run_in_driver,
    sweep_seed,
    trial_configs,
    trial_threads,
)
from railyard.training.workflow import TrainingData

FEATURES = ["charge_type", "charge_amount", "charge_country"]
LABEL = "has_fraud_dispute"


def train_spec(tune: dict, **params) -> TrainSpec:
    return TrainSpec.model_validate({
        "workflow_name": "xgboost", "classifier_features": FEATURES, "label": LABEL,
        "custom_params": {"n_estimators": 10, **params},
        "tune": {"search_space": {"max_depth": {"randint": [2, 6]},
                                  "learning_rate": {"loguniform": [0.01, 0.5]}},
                 "num_samples": 6, **tune}})


@pytest.fixture(scope="module")
def data() -> TrainingData:
    table = fraud_table(3000, seed=5)
    return TrainingData(train=table.slice(0, 2400), holdout=table.slice(2400),
                        features=FEATURES, label=LABEL)


def test_configs_are_drawn_once_per_spec_and_cover_the_grid() -> None:
    train = train_spec({})
    first, again = trial_configs(train, sweep_seed(train)), trial_configs(train, sweep_seed(train))
    assert first == again and len(first) == 6
    assert all(2 <= c["max_depth"] < 6 and type(c["max_depth"]) is int for c in first)
    assert all(0.01 <= c["learning_rate"] <= 0.5 for c in first)
    assert len({c["learning_rate"] for c in first}) == 6
    grid = train_spec({"search_space": {"max_depth": {"grid": [2, 4]},
                                        "learning_rate": {"grid": [0.1, 0.3]}},
                       "search_alg": "grid"})
    assert sorted((c["max_depth"], c["learning_rate"])
                  for c in trial_configs(grid, sweep_seed(grid))) == \
        [(2, 0.1), (2, 0.3), (4, 0.1), (4, 0.3)]
    mixed = train_spec({"search_space": {"max_depth": {"grid": [2, 4]},
                                         "learning_rate": {"uniform": [0.1, 0.3]}},
                        "num_samples": 3})
    assert len(trial_configs(mixed, 1)) == 6          # 3 samples x 2 grid points, as in Tune


def test_every_trial_is_recorded_and_the_best_model_is_the_jobs(data) -> None:
    train = train_spec({})
    workflow = get_workflow("xgboost")(train)
    live = []
    sweep = run_in_driver(workflow, data, train, on_trials=live.extend, threads=2)
    assert sweep.engine == "driver" and sweep.recorded_live and sweep.resumed_trials == 0
    assert sorted(r.trial_id for r in live) == [f"trial_{i:05d}" for i in range(6)]
    assert all(r.status == "SUCCEEDED" and "auc" in r.metrics for r in sweep.trials)
    best = max(sweep.trials, key=lambda r: r.metrics["auc"])
    assert (sweep.best_trial_id, sweep.best_params) == (best.trial_id, best.params)
    # The job's model is the best trial's: refitting its params gives the same holdout AUC.
    assert workflow.evaluate(sweep.model, data)["auc"] == pytest.approx(best.metrics["auc"],
                                                                         abs=1e-12)


def test_a_retried_attempt_keeps_the_finished_trials(data) -> None:
    train = train_spec({})
    workflow = get_workflow("xgboost")(train)
    first = run_in_driver(workflow, data, train, threads=1)
    # The earlier attempt recorded 4 of the 6 trials before its driver died.
    earlier = [{**vars(r)} for r in first.trials[:4]]
    ran = []
    resumed = run_in_driver(workflow, data, train, on_trials=ran.extend, earlier=earlier)
    assert resumed.resumed_trials == 4
    assert sorted(r.trial_id for r in ran) == [t.trial_id for t in first.trials[4:]]
    assert [(r.trial_id, r.params) for r in resumed.trials] == \
        [(r.trial_id, r.params) for r in first.trials]
    assert resumed.best_trial_id == first.best_trial_id
    np.testing.assert_allclose(workflow.predict(resumed.model, data.holdout),
                               workflow.predict(first.model, data.holdout), atol=1e-6)
    # A record whose params differ (another spec) is not this sweep's trial.
    stranger = [{**vars(first.trials[0]), "params": {"max_depth": 99}}]
    assert run_in_driver(workflow, data, train, earlier=stranger).resumed_trials == 0


def test_failed_trials_are_records_and_all_failing_fails_the_sweep(data) -> None:
    train = train_spec({"search_space": {"max_depth": {"choice": [3, -1]}}, "num_samples": 6})
    workflow = get_workflow("xgboost")(train)
    sweep = run_in_driver(workflow, data, train)
    statuses = {r.params["max_depth"]: r.status for r in sweep.trials}
    assert statuses == {3: "SUCCEEDED", -1: "FAILED"}
    assert all(r.error for r in sweep.trials if r.status == "FAILED")
    bad = train_spec({"search_space": {"max_depth": {"choice": [-1, -2]}}})
    with pytest.raises(RuntimeError, match="all 6 trials failed"):
        run_in_driver(get_workflow("xgboost")(bad), data, bad)


def test_threads_follow_cpus_per_trial_and_the_concurrency_cap() -> None:
    assert trial_threads(train_spec({"cpus_per_trial": 0.5}), cpus=8) == 8
    assert trial_threads(train_spec({"cpus_per_trial": 2}), cpus=8) == 4
    assert trial_threads(train_spec({"cpus_per_trial": 1, "max_concurrent_trials": 3}),
                         cpus=8) == 3
    assert trial_threads(train_spec({"cpus_per_trial": 16}), cpus=8) == 1


def spec_with(tune: dict) -> object:
    return parse_spec({"model_name": "m", "owner": "o",
                       "data": {"features": [{"names": [*FEATURES, LABEL], "source": "local",
                                              "path": "/tmp/x"}]},
                       "train": {**train_spec(tune).model_dump(mode="json")}})


@pytest.mark.parametrize("tune, rows, engine", [
    ({}, 5_000, "driver"),
    ({}, 500_000, "ray_tune"),
    ({"scheduler": "asha"}, 5_000, "ray_tune"),
    ({"search_alg": "optuna"}, 5_000, "ray_tune"),
    ({"time_budget_s": 60}, 5_000, "ray_tune"),
    ({"engine": "ray_tune"}, 5_000, "ray_tune"),
    ({"engine": "driver"}, 500_000, "driver"),
])
def test_the_engine_choice(tune: dict, rows: int, engine: str) -> None:
    chosen, reason = sweep_engine(spec_with(tune), train_rows=rows, max_rows=100_000)
    assert chosen == engine and reason


def test_engine_driver_with_what_needs_tune_is_rejected() -> None:
    with pytest.raises(ValueError, match="engine driver runs random or grid"):
        train_spec({"engine": "driver", "scheduler": "asha"})
