"""Hyperparameter sweeps through the API: trial records, best params, early stopping."""

from __future__ import annotations

import numpy as np
import pytest

from railyard.data.demo import sample_spec


def sweep_spec(platform, tune: dict, params: dict | None = None) -> dict:
    spec = sample_spec(platform.fraud_uri, source="s3")
    spec["train"] = {"workflow_name": "xgboost",
                     "classifier_features": ["charge_type", "charge_amount", "charge_country"],
                     "label": "has_fraud_dispute",
                     "custom_params": params or {"n_estimators": 40},
                     "tune": {"cpus_per_trial": 0.5, **tune}}
    return spec


def check_sweep(client, job: dict, expected_trials: int) -> list[dict]:
    assert job["status"] == "SUCCEEDED", (job["error"], client.logs(job["id"])[-3000:])
    trials = client.trials(job["id"])
    assert len(trials) == expected_trials
    summary = job["metrics"]["tune"]
    assert summary["metric"] == "auc" and summary["mode"] == "max"
    done = [t for t in trials if t["status"] == "SUCCEEDED"]
    best = max(done, key=lambda t: t["metrics"]["auc"])
    assert summary["best_trial_id"] == best["trial_id"]
    assert summary["best_params"] == best["params"]
    assert job["metrics"]["holdout"]["auc"] == pytest.approx(best["metrics"]["auc"], abs=1e-9)
    for trial in trials:
        assert trial["duration_s"] is None or trial["duration_s"] >= 0
        assert set(trial["params"]) >= set(job["spec"]["train"]["tune"]["search_space"])
    return trials


def test_asha_sweep_of_16_trials(platform, client):
    spec = sweep_spec(platform, {"search_space": {"max_depth": {"randint": [2, 8]},
                                                  "learning_rate": {"loguniform": [0.01, 0.5]}},
                                 "scheduler": "asha", "num_samples": 16,
                                 "max_concurrent_trials": 4},
                      params={"n_estimators": 60})
    job = client.wait(client.submit(spec)["id"], timeout=600)
    trials = check_sweep(client, job, 16)
    assert job["metrics"]["tune"]["engine"] == "ray_tune"
    statuses = {t["status"] for t in trials}
    assert statuses <= {"SUCCEEDED", "STOPPED"}
    assert "STOPPED" in statuses, "ASHA should stop some of 16 trials early"


def test_optuna_sweep(platform, client):
    spec = sweep_spec(platform, {"search_space": {"max_depth": {"randint": [2, 6]},
                                                  "min_child_weight": {"uniform": [1, 20]}},
                                 "search_alg": "optuna", "num_samples": 6,
                                 "max_concurrent_trials": 2})
    check_sweep(client, client.wait(client.submit(spec)["id"], timeout=600), 6)


def test_grid_sweep(platform, client):
    spec = sweep_spec(platform, {"search_space": {"max_depth": {"grid": [2, 4]},
                                                  "learning_rate": {"grid": [0.1, 0.3]}},
                                 "search_alg": "grid"})
    job = client.wait(client.submit(spec)["id"], timeout=600)
    trials = check_sweep(client, job, 4)
    # A small grid with the FIFO scheduler runs in the job's driver
    # (railyard.training.sweeps.in_driver).
    assert job["metrics"]["tune"]["engine"] == "driver"
    assert any(e["kind"] == "sweep_engine" and e["message"].startswith("driver:")
               for e in client.events(job["id"])), "the engine choice is on the timeline"
    assert sorted((t["params"]["max_depth"], t["params"]["learning_rate"]) for t in trials) == \
        [(2, 0.1), (2, 0.3), (4, 0.1), (4, 0.3)]


def test_bad_search_space_is_422(platform, client):
    spec = sweep_spec(platform, {"search_space": {"max_dept": {"randint": [2, 8]}}})
    with pytest.raises(Exception) as info:
        client.submit(spec)
    assert getattr(info.value, "status_code", None) == 422
    assert "did you mean 'max_depth'" in str(info.value)
    spec = sweep_spec(platform, {"search_space": {"max_depth": {"between": [2, 8]}}})
    with pytest.raises(Exception) as info:
        client.submit(spec)
    assert "train.tune.search_space.max_depth" in str(info.value)


def test_fan_out_over_20_partitions(platform, client):
    import pyarrow as pa

    from railyard.data.demo import fraud_table
    from tests.integration.support import DATA_BUCKET, upload_table

    table = fraud_table(40_000, seed=11)
    segment = pa.array([f"m{int(v) % 20:02d}" for v in table["merchant_id"].to_pylist()])
    uri = upload_table(table.append_column("segment", segment), DATA_BUCKET, "segments")
    spec = sample_spec(uri, source="s3")
    spec["data"]["features"][0]["names"].append("segment")
    spec["data"]["filters"] = []
    spec["train"] = {"workflow_name": "xgboost", "label": "has_fraud_dispute",
                     "classifier_features": ["charge_type", "charge_amount", "charge_country"],
                     "custom_params": {"n_estimators": 10, "max_depth": 3},
                     "partition_by": "segment", "resources": {"cpus_per_worker": 0.25}}
    job = client.wait(client.submit(spec)["id"], timeout=600)
    assert job["status"] == "SUCCEEDED", (job["error"], client.logs(job["id"])[-3000:])
    models = client.models(job["id"])
    assert [m["partition"] for m in models] == [f"m{i:02d}" for i in range(20)]
    assert all(m["status"] == "SUCCEEDED" and "auc" in m["metrics"] for m in models)
    assert all(m["model_dir"].endswith(f"/models/{m['partition']}") for m in models)
    assert sum(m["train_rows"] for m in models) == job["dataset"]["train_rows"]
    fanout = job["metrics"]["fanout"]
    assert fanout["partitions"] == 20 and fanout["succeeded"] == 20 and "mean_auc" in fanout
    # Predictions route each row to its partition's model.
    from railyard.serving.published import load_published

    sample = table.append_column("segment", segment).slice(0, 400)
    routed = client.load_model(job["id"]).predict(sample)
    first = load_published(models[0]["model_dir"])
    rows = [i for i, s in enumerate(sample["segment"].to_pylist()) if s == "m00"]
    assert rows
    np.testing.assert_array_equal(routed[rows], first.predict(sample.take(rows)))
    assert not np.isnan(routed).any()
