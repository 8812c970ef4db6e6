"""Workflow registry, hyperparameter validation and the XGBoost workflow on small data."""

from __future__ import annotations

import pyarrow as pa
import pytest

from railyard.data.demo import fraud_table
from railyard.errors import SpecError, UnknownWorkflowError
from railyard.spec import TrainSpec
from railyard.training.builtin.xgboost import XGBoostWorkflow
from railyard.training.registry import available_workflows, get_workflow
from railyard.training.workflow import TrainContext, TrainingData


def test_registry_has_builtins_and_examples():
    assert {"xgboost", "StripeFraudModel"} <= set(available_workflows())
    with pytest.raises(UnknownWorkflowError, match="did you mean 'xgboost'"):
        get_workflow("xgbost")


def test_params_accept_sklearn_and_native_names_and_reject_typos():
    params = XGBoostWorkflow.parse_params({"n_estimators": 5, "learning_rate": 0.1,
                                           "objective": "reg:linear", "lambda": 2.0})
    booster = params.booster_params()
    assert booster == {"objective": "reg:squarederror", "eta": 0.1, "lambda": 2.0}
    assert params.n_estimators == 5
    with pytest.raises(SpecError) as info:
        XGBoostWorkflow.parse_params({"learning_rat": 0.1})
    assert "did you mean 'learning_rate'" in info.value.message
    assert info.value.details[0]["field"] == "train.custom_params.learning_rat"


def test_stripe_fraud_model_derives_label_and_trains():
    cls = get_workflow("StripeFraudModel")
    wf = cls(TrainSpec(workflow_name="StripeFraudModel",
                       classifier_features=["charge_type", "charge_amount", "charge_country"],
                       label="is_fraudulent", custom_params={"n_estimators": 20}))
    table = wf.prepare(fraud_table(3000, seed=1))
    assert table["is_fraudulent"].to_pylist() == [int(v) for v in
                                                 table["has_fraud_dispute"].to_pylist()]
    data = TrainingData(train=table.slice(0, 2500), holdout=table.slice(2500),
                        features=["charge_type", "charge_amount", "charge_country"],
                        label="is_fraudulent")
    progress: list[str] = []
    model = wf.fit(data, TrainContext(on_progress=progress.append))
    metrics = wf.evaluate(model, data)
    assert set(metrics) >= {"auc", "logloss", "pr_auc"} and 0 <= metrics["auc"] <= 1
    assert progress and progress[-1].startswith("iteration 20/20")


def test_unseen_category_at_predict_time_does_not_crash(tmp_path):
    wf = XGBoostWorkflow(TrainSpec(workflow_name="xgboost", classifier_features=["c", "x"],
                                   label="y", custom_params={"n_estimators": 3}))
    train = pa.table({"c": ["a", "b"] * 50, "x": list(range(100)), "y": [0, 1] * 50})
    model = wf.fit(TrainingData(train=train, holdout=train.slice(0, 0), features=["c", "x"],
                                label="y"), TrainContext())
    wf.save(model, tmp_path)
    loaded = wf.load(tmp_path)
    preds = wf.predict(loaded, pa.table({"c": ["a", "zzz"], "x": [1, 2]}))
    assert preds.shape == (2,)
    assert list(wf.predict(loaded, train.slice(0, 4))) == list(wf.predict(model, train.slice(0, 4)))


def test_node_cpus_counts_only_the_cores_the_process_is_pinned_to():
    """A driver on a node pinned with taskset (or a cpuset) must not start a thread per host
    core: Ray's own count ignores the affinity mask."""
    import os

    from railyard.training.workflow import node_cpus

    cores = sorted(os.sched_getaffinity(0))
    try:
        os.sched_setaffinity(0, {cores[0]})
        assert node_cpus() == 1
        assert TrainContext(resources={}).threads == 1
    finally:
        os.sched_setaffinity(0, set(cores))
    assert node_cpus() == min(len(cores), os.cpu_count() or 1)
