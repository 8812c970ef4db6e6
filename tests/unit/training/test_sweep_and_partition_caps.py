"""The caps on how many models one job may make: a sweep's trials (RAILYARD_MAX_SWEEP_TRIALS, a
422 at submit) and a fan-out's partitions (RAILYARD_MAX_PARTITIONS, the job fails before any
partition is trained). No Ray: the partition cap is checked before the fan-out starts it."""

from __future__ import annotations

import copy

import pyarrow as pa
import pytest

from railyard.config import Settings, get_settings
from railyard.errors import SpecError
from railyard.spec import TrainSpec, parse_spec
from railyard.training.partitioned import check_partition_count, run_fanout
from railyard.training.submit_checks import validate_spec
from railyard.training.sweeps.in_driver import trial_configs
from railyard.training.workflow import TrainingData
from tests.fakes import build_env, job_count


def swept(spec: dict, search_space: dict, **tune) -> dict:
    spec = copy.deepcopy(spec)
    spec["train"]["tune"] = {"search_space": search_space, **tune}
    return spec


THREE_BIG_GRIDS = {name: {"grid": list(range(1, 1001))}
                   for name in ("max_depth", "n_estimators", "min_child_weight")}


# --------------------------------------------------------------------------- sweeps

def test_trial_count_is_what_the_driver_engine_expands() -> None:
    train = TrainSpec.model_validate({
        "workflow_name": "xgboost", "classifier_features": ["a"], "label": "y",
        "tune": {"search_space": {"max_depth": {"grid": [2, 3, 4]},
                                  "eta": {"grid": [0.1, 0.2]},
                                  "gamma": {"uniform": [0, 1]}}, "num_samples": 4}})
    assert train.tune is not None
    assert train.tune.trial_count == len(trial_configs(train, 1)) == 24


def test_a_sweep_over_the_cap_is_a_422_naming_train_tune_and_the_count(tmp_path):
    client, service, backend, spec = build_env(tmp_path)
    response = client.post("/v1/jobs", json=swept(spec, THREE_BIG_GRIDS, num_samples=10_000))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["details"][0]["field"] == "train.tune"
    assert "10000000000000 trials" in error["message"]
    assert "RAILYARD_MAX_SWEEP_TRIALS" in error["message"] and "10000 per job" in error["message"]
    assert job_count(service) == 0 and backend.submitted == []
    # at the cap it goes through: 100 grid points x 100 samples
    fits = {"max_depth": {"grid": list(range(1, 11))},
            "n_estimators": {"grid": list(range(10, 110, 10))}}
    assert client.post("/v1/jobs", json=swept(spec, fits, num_samples=100)).status_code == 201


def test_the_sweep_cap_is_a_setting(tmp_path):
    client, service, backend, spec = build_env(tmp_path)
    grid = {"max_depth": {"grid": [3, 4, 5]}, "n_estimators": {"grid": [10, 20]}}
    spec = parse_spec(swept(spec, grid, search_alg="grid"))
    validate_spec(spec, settings=Settings(max_sweep_trials=6))
    with pytest.raises(SpecError) as info:
        validate_spec(spec, settings=Settings(max_sweep_trials=5))
    assert info.value.details == [{"field": "train.tune",
                                   "message": "6 trials; at most 5 (RAILYARD_MAX_SWEEP_TRIALS)"}]
    assert "6 grid combinations" in info.value.message


# --------------------------------------------------------------------------- partitions

def table_of(values: list) -> pa.Table:
    return pa.table({"segment": values, "x": list(range(len(values)))})


def test_partitions_are_counted_as_the_fan_out_splits_them() -> None:
    assert check_partition_count(table_of(["a", "b", "a", None, None]), "segment", 3) == 3
    assert check_partition_count(table_of([]), "segment", 1) == 0
    with pytest.raises(SpecError) as info:
        check_partition_count(table_of([f"m{i}" for i in range(30)] * 2), "segment", 29)
    error = info.value
    assert error.details == [{"field": "train.partition_by",
                              "message": "30 partitions; at most 29 (RAILYARD_MAX_PARTITIONS)"}]
    assert "'segment' has 30 distinct values" in error.message
    assert "RAILYARD_MAX_PARTITIONS" in error.message and "train.partition_by" in error.message


def fanout_data(values: list) -> TrainingData:
    return TrainingData(train=table_of(values), holdout=table_of(values[:1]),
                        features=["x"], label="x")


FANOUT_SPEC = TrainSpec(workflow_name="xgboost", classifier_features=["x"], label="x",
                        partition_by="segment")


def test_a_fan_out_over_the_cap_fails_before_anything_is_trained(monkeypatch):
    """Raised before Ray is started or a partition is split: these tests run without Ray."""
    def never(*args, **kwargs):
        raise AssertionError("nothing may be trained")

    monkeypatch.setattr("railyard.data.fetch.ensure_ray", never)
    with pytest.raises(SpecError, match="12 distinct values.*at most 5 partitions"):
        run_fanout(fanout_data([f"v{i}" for i in range(12)]), FANOUT_SPEC, column="segment",
                   artifact_root="unused", job_id="job-x", on_model=never, max_partitions=5)
    # without an explicit cap, the process's settings (RAILYARD_MAX_PARTITIONS) decide
    monkeypatch.setenv("RAILYARD_MAX_PARTITIONS", "3")
    get_settings.cache_clear()
    try:
        with pytest.raises(SpecError, match="at most 3 partitions"):
            run_fanout(fanout_data(["a", "b", "c", "d"]), FANOUT_SPEC, column="segment",
                       artifact_root="unused", job_id="job-x", on_model=never)
    finally:
        get_settings.cache_clear()


def test_the_job_driver_gets_the_servers_partition_cap():
    assert Settings(max_partitions=42).runtime_env_vars()["RAILYARD_MAX_PARTITIONS"] == "42"
