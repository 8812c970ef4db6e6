"""Whoever can write to the artifact store cannot make a Railyard process unpickle their bytes
(railyard.artifacts.integrity): a scikit-learn model rewritten in the store after its job
succeeded is refused by every loader, naming the file, and a retried sweep never restores the
Ray Tune state an earlier attempt left in the store. Each planted pickle would create a marker
file if anything unpickled it."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pyarrow.parquet as pq
import pytest

from railyard.artifacts.integrity import ArtifactIntegrityError
from railyard.data.demo import sample_spec
from railyard.serving.published import load_published
from tests.integration.support import OUTAGE_ERRORS, runner_processes
from tests.polling import wait_for

FEATURES = ["charge_type", "charge_amount", "charge_country"]


class Payload:
    """A pickle that creates ``marker`` when it is unpickled (what an attacker's would run)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return open, (str(self.marker), "w")


def split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len("s3://"):].partition("/")
    return bucket, key


def plant(uri_prefix: str, marker: Path, suffixes: tuple[str, ...]) -> list[str]:
    """Overwrite every object under ``uri_prefix`` whose name ends in ``suffixes`` with a
    payload pickle; the keys overwritten."""
    s3 = boto3.client("s3")
    bucket, prefix = split_s3(uri_prefix)
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix.rstrip("/") + "/")
            for o in page.get("Contents", []) if o["Key"].endswith(suffixes)]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=pickle.dumps(Payload(marker)))
    return keys


def predict_cli(platform, job_id: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``railyard predict`` on a machine that reaches the job database."""
    sample = platform.fraud.slice(0, 200)
    pq.write_table(sample, tmp_path / "in.parquet")
    exe = os.path.join(os.path.dirname(sys.executable), "railyard")
    return subprocess.run(
        [exe, "predict", job_id, str(tmp_path / "in.parquet"), str(tmp_path / "out.parquet")],
        capture_output=True, text=True, timeout=180,
        env={**os.environ, "RAILYARD_API_URL": platform.api_url,
             "RAILYARD_DATABASE_URL": platform.settings.resolved_database_url})


def test_a_model_rewritten_in_the_store_is_refused_by_every_loader(platform, client, tmp_path):
    spec = sample_spec(platform.fraud_uri, source="s3")
    spec["model_name"] = "integrity-sklearn"
    spec["train"] = {"workflow_name": "sklearn", "classifier_features": FEATURES,
                     "label": "has_fraud_dispute",
                     "custom_params": {"estimator": "LogisticRegression", "C": 0.5}}
    job = client.wait(client.submit(spec)["id"], timeout=300)
    assert job["status"] == "SUCCEEDED", job["error"]
    artifacts = job["artifacts"]
    assert len(artifacts["manifest_sha256"]) == 64
    sample = platform.fraud.slice(0, 200)
    before = load_published(artifacts["model_dir"], trusted=artifacts).predict(sample)
    assert len(before) == 200
    clean = predict_cli(platform, job["id"], tmp_path)
    assert clean.returncode == 0, clean.stdout + clean.stderr

    marker = tmp_path / "payload-ran"
    planted = plant(artifacts["model_dir"], marker, (".joblib",))
    model_file = f"{artifacts['model_dir']}/model.joblib"
    assert [f"s3://{split_s3(artifacts['model_dir'])[0]}/{k}" for k in planted] == [model_file]

    with pytest.raises(ArtifactIntegrityError, match="does not match") as info:
        load_published(artifacts["model_dir"], trusted=artifacts)
    assert model_file in info.value.message
    with pytest.raises(ArtifactIntegrityError) as info:   # the SDK, where no database is
        client.load_model(job["id"])
    assert model_file in info.value.message
    refused = predict_cli(platform, job["id"], tmp_path)
    assert refused.returncode == 1
    assert f"{model_file} does not match" in refused.stdout + refused.stderr
    assert not marker.exists(), "the planted pickle was unpickled"


def kill_driver(job_id: str) -> None:
    procs = wait_for(lambda: runner_processes(job_id), 30, "the driver process",
                     interval=0.5, ignore=OUTAGE_ERRORS)
    for proc in procs:
        proc.kill()


def test_a_retried_sweep_never_unpickles_the_tune_state_left_in_the_store(platform, client,
                                                                          tmp_path):
    spec = sample_spec(platform.fraud_uri, source="s3")
    spec["model_name"] = "integrity-sweep"
    spec["lifecycle"] = {"max_retries": 1}
    spec["train"]["custom_params"] = {"n_estimators": 1500, "max_depth": 3, "nthread": 1}
    spec["train"]["tune"] = {"search_space": {"learning_rate": {"loguniform": [0.01, 0.3]}},
                             "num_samples": 6, "max_concurrent_trials": 1,
                             "cpus_per_trial": 1, "engine": "ray_tune"}
    job = client.submit(spec)
    wait_for(lambda: len(client.trials(job["id"])) >= 2, 240, "two finished trials",
             interval=0.5, ignore=OUTAGE_ERRORS)
    recorded = len(client.trials(job["id"]))
    assert recorded < 6, "the sweep ended before the test could kill it"
    kill_driver(job["id"])
    # The attacker's move, before the retry starts: every pickle of the sweep's Tune state.
    marker = tmp_path / "payload-ran"
    tune_state = f"{platform.settings.resolved_artifact_root}/{job['id']}/ray-tune"
    planted = plant(tune_state, marker, (".pkl", ".pickle", ".joblib"))
    assert any(key.endswith("/tuner.pkl") for key in planted), planted

    final = client.wait(job["id"], timeout=400)
    assert final["status"] == "SUCCEEDED" and final["attempt"] == 2, final["error"]
    assert not marker.exists(), "the retried attempt unpickled the earlier Tune state"
    tune = final["metrics"]["tune"]
    assert tune["resumed_trials"] >= recorded >= 2, tune
    trials = client.trials(job["id"])
    assert len(trials) == 6 and sum(tune["trials"].values()) == 6
    assert [a["status"] for a in client.attempts(job["id"])] == ["FAILED", "SUCCEEDED"]
