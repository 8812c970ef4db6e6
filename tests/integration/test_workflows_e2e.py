"""Every built-in and example workflow through the API on Parquet in the S3 server, and
`railyard predict` checked against the native model file."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys

import boto3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xgboost as xgb

from railyard.data.demo import sample_spec
from railyard.training.encoding import encode
from tests.integration.support import DATA_BUCKET, upload_table

FEATURES = ["charge_type", "charge_amount", "charge_country"]


def fraud_spec(platform, workflow: str, params: dict, label: str = "has_fraud_dispute") -> dict:
    spec = sample_spec(platform.fraud_uri, source="s3")
    spec["model_name"] = f"{workflow}-e2e"
    spec["train"] = {"workflow_name": workflow, "classifier_features": FEATURES,
                     "label": label, "custom_params": params}
    if label == "merchant_id":
        spec["data"]["features"][0]["names"].append("merchant_id")
        spec["train"]["classifier_features"] = ["charge_type", "charge_country", "charge_amount"]
    return spec


@pytest.mark.parametrize("workflow, params, metric", [
    ("xgboost", {"n_estimators": 30, "max_depth": 4}, "auc"),
    ("lightgbm", {"n_estimators": 30, "num_leaves": 15}, "auc"),
    ("sklearn", {"estimator": "LogisticRegression", "C": 0.5}, "auc"),
    ("sklearn", {"estimator": "RandomForestRegressor", "n_estimators": 20, "max_depth": 6},
     "rmse"),
    ("torch", {"hidden_sizes": [16], "max_epochs": 3, "batch_size": 512}, "auc"),
])
def test_builtin_workflows_train_through_the_api(platform, client, workflow, params, metric):
    label = "merchant_id" if metric == "rmse" else "has_fraud_dispute"
    spec = fraud_spec(platform, workflow, params, label=label)
    job = client.wait(client.submit(spec)["id"], timeout=300)
    assert job["status"] == "SUCCEEDED", job["error"]
    assert metric in job["metrics"]["holdout"]
    manifest = client._request("GET", f"/v1/jobs/{job['id']}").json()["artifacts"]
    assert manifest["model"].startswith("s3://")


def test_forecaster_example(platform, client):
    days = 500
    start = dt.datetime(2019, 1, 1)
    t = np.arange(days)
    rng = np.random.default_rng(1)
    sales = 100 + 10 * np.sin(2 * np.pi * t / 7) + 0.05 * t + rng.normal(0, 1, days)
    table = pa.table({"day": pa.array([start + dt.timedelta(days=int(i)) for i in t],
                                      type=pa.timestamp("us")),
                      "sales": sales, "promo": rng.random(days) < 0.1})
    uri = upload_table(table, DATA_BUCKET, "sales", files=2)
    spec = {"model_name": "sales-forecast", "owner": "forecasting",
            "data": {"features": [{"names": ["day", "sales", "promo"], "source": "s3",
                                   "path": uri}],
                     "date_column": "day",
                     "holdout_sampling": {"sampling_function": "LATEST",
                                          "latest_sampling": {"fraction": 0.2}}},
            "train": {"workflow_name": "TimeSeriesForecaster", "label": "sales",
                      "classifier_features": ["promo", "day_of_week"],
                      "custom_params": {"lags": 14, "horizon": 1, "n_estimators": 100}}}
    job = client.wait(client.submit(spec)["id"], timeout=300)
    assert job["status"] == "SUCCEEDED", job["error"]
    holdout = job["metrics"]["holdout"]
    assert {"mape", "smape", "rmse"} <= set(holdout)
    assert holdout["mape"] < 5.0                       # percent
    assert holdout["rmse"] < holdout["naive_rmse"]    # beats "same as yesterday"


def test_word2vec_example(platform, client):
    rng = np.random.default_rng(2)
    animals, foods = ["cat", "dog", "cow", "horse"], ["apple", "bread", "rice", "cheese"]
    texts = [f"the {rng.choice(animals)} eats {rng.choice(foods)} every day" for _ in range(3000)]
    uri = upload_table(pa.table({"text": texts, "n": np.arange(3000)}), DATA_BUCKET, "texts",
                       files=1)
    spec = {"model_name": "w2v", "owner": "nlp",
            "data": {"features": [{"names": ["text"], "source": "s3", "path": uri}],
                     "holdout_sampling": {"sampling_function": "RANDOM",
                                          "random_sampling": {"fraction": 0.1, "seed": 1}}},
            "train": {"workflow_name": "Word2Vec", "classifier_features": ["text"],
                      "label": "text",
                      "custom_params": {"embedding_dim": 16, "window": 2, "epochs": 2,
                                        "min_count": 2}}}
    job = client.wait(client.submit(spec)["id"], timeout=300)
    assert job["status"] == "SUCCEEDED", job["error"]
    assert job["metrics"]["holdout"]["vocab_size"] >= 10


def test_railyard_predict_equals_the_native_model(platform, client, tmp_path):
    spec = fraud_spec(platform, "xgboost", {"n_estimators": 25, "max_depth": 4})
    job = client.wait(client.submit(spec)["id"], timeout=300)
    assert job["status"] == "SUCCEEDED", job["error"]
    sample = platform.fraud.slice(0, 500)
    pq.write_table(sample, tmp_path / "in.parquet")
    exe = os.path.join(os.path.dirname(sys.executable), "railyard")
    run = subprocess.run([exe, "predict", job["id"], str(tmp_path / "in.parquet"),
                          str(tmp_path / "out.parquet")], capture_output=True, text=True,
                         env={**os.environ, "RAILYARD_API_URL": platform.api_url}, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    predicted = pq.read_table(tmp_path / "out.parquet")["prediction"].to_numpy()

    s3 = boto3.client("s3")
    model_dir = job["artifacts"]["model_dir"][len("s3://"):]
    bucket, prefix = model_dir.split("/", 1)
    booster = xgb.Booster()
    booster.load_model(bytearray(s3.get_object(Bucket=bucket, Key=f"{prefix}/model.json")
                                 ["Body"].read()))
    import json

    encoding = json.loads(s3.get_object(Bucket=bucket, Key=f"{prefix}/encoding.json")
                          ["Body"].read())["encoding"]
    native = booster.predict(xgb.DMatrix(encode(sample, encoding), enable_categorical=True))
    np.testing.assert_array_equal(predicted, native)
    loaded = client.load_model(job["id"])
    np.testing.assert_array_equal(loaded.predict(sample), native)


def test_blog_spec_streams_to_two_ray_train_workers_with_the_same_rows(platform, client):
    """The blog's spec (StripeFraudModel, XGBoost) on num_workers=2: Ray Data feeds the Ray
    Train workers; the driver only sees summaries. Row counts equal an independent pyarrow
    evaluation, the label balance adds up, and each worker's own output reaches the log."""
    from tests.integration.support import expected_counts

    spec = sample_spec(platform.fraud_uri, source="s3")
    spec["model_name"] = "blog-streamed"
    spec["train"]["custom_params"]["n_estimators"] = 30
    spec["train"]["resources"] = {"pool": "cpu", "num_workers": 2}
    job = client.wait(client.submit(spec)["id"], timeout=400)
    assert job["status"] == "SUCCEEDED", (job["error"], client.logs(job["id"])[-3000:])
    stats = job["dataset"]["stats"]
    assert stats["read_engine"] == "ray.data (streamed to training)"
    assert (job["dataset"]["train_rows"], job["dataset"]["holdout_rows"]) == \
        expected_counts(platform.fraud)
    assert sum(stats["label_balance"].values()) == stats["rows_after_filters"]
    assert 0.5 < job["metrics"]["holdout"]["auc"] <= 1
    manifest = client.load_model(job["id"]).manifest
    assert manifest["task"] == "binary" and "roc_curve" in json.dumps(manifest["reports"])
    events = [e["message"] for e in client.events(job["id"]) if e["kind"] == "progress"]
    assert any("2 Ray Train workers" in m for m in events)
    # The workers' own output reached the job's durable log (through the driver). One line
    # per worker process: on this one-machine cluster every node's Ray log monitor tails the
    # same session log directory, and a line Ray's log dedup does not merge (it arrived in
    # another 5 s window) shows up twice, so count each worker pid once.
    log_text = client.logs(job["id"])
    shards = {re.search(r"pid=(\d+)", line).group(1):
              int(line.split("training rows")[0].split(":")[-1])
              for line in log_text.splitlines()
              if "railyard train worker" in line and "pid=" in line}
    assert len(shards) == 2 and sum(shards.values()) == job["dataset"]["train_rows"], \
        log_text[-3000:]


def test_serve_model_answers_predict_like_the_native_model(platform, client):
    """`railyard serve-model` deploys the model beside the API; /predict (with the API token)
    equals the model loaded with the SDK, and the API keeps answering."""
    from urllib.parse import urlparse

    import httpx

    from railyard.serving.model_server import route_prefix, undeploy_model

    spec = fraud_spec(platform, "xgboost", {"n_estimators": 15, "max_depth": 3})
    job = client.wait(client.submit(spec)["id"], timeout=300)
    assert job["status"] == "SUCCEEDED", job["error"]
    exe = os.path.join(os.path.dirname(sys.executable), "railyard")
    env = {**os.environ, "RAILYARD_API_URL": platform.api_url, "RAILYARD_TOKEN": platform.token,
           "RAILYARD_RAY_ADDRESS": platform.ray_address}
    run = subprocess.run([exe, "serve-model", job["id"]], capture_output=True, text=True,
                         env=env, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    port = urlparse(platform.api_url).port
    url = f"http://127.0.0.1:{port}{route_prefix(job['id'])}"
    assert f"{url}/predict" in run.stdout
    auth = {"Authorization": f"Bearer {platform.token}"}
    try:
        sample = platform.fraud.slice(100, 50)
        rows = [{k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in r.items()}
                for r in sample.select(spec["train"]["classifier_features"]).to_pylist()]
        assert httpx.post(f"{url}/predict", json={"rows": rows}, timeout=60).status_code == 401
        answer = httpx.post(f"{url}/predict", json={"rows": rows}, headers=auth, timeout=60)
        assert answer.status_code == 200, answer.text
        served = np.asarray([p["prediction"] for p in answer.json()["predictions"]],
                            dtype=float)
        expected = client.load_model(job["id"]).predict(sample)
        np.testing.assert_allclose(served, expected, rtol=1e-6)
        bad = httpx.post(f"{url}/predict", json={"rows": [{"nope": 1}]}, headers=auth,
                         timeout=60)
        assert bad.status_code == 422 and "charge_amount" in bad.text
        assert client.get(job["id"])["status"] == "SUCCEEDED"      # the API is still there
    finally:
        undeploy_model(job_id=job["id"], address=platform.ray_address)
