"""The blog's sample request through the real platform: REST → Postgres → Ray job → data from
the S3 server → XGBoost → model, metrics and logs in the artifact store."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import boto3
import numpy as np
import xgboost as xgb
from sqlmodel import Session, func, select

from railyard.data.demo import sample_spec
from railyard.jobstore.tables import Job
from railyard.training.encoding import encode
from tests.integration.support import expected_counts


def s3_bytes(uri: str) -> bytes:
    bucket, key = uri[len("s3://"):].split("/", 1)
    return boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()


def test_blog_sample_request_trains_and_publishes(platform, client):
    spec = sample_spec(platform.fraud_uri, source="s3")
    created = client.submit(spec)
    assert created["id"].startswith("job-")
    assert created["status"] in ("QUEUED", "PENDING", "RUNNING")

    job = client.wait(created["id"], timeout=60)
    assert job["status"] == "SUCCEEDED", (job["error"], client.events(job["id"]))
    train_rows, holdout_rows = expected_counts(platform.fraud)
    assert job["dataset"] == {**job["dataset"], "train_rows": train_rows,
                              "holdout_rows": holdout_rows}
    assert [p["name"] for p in job["phases"]] == ["fetch", "split", "train", "evaluate",
                                                  "publish"]
    assert all(p["duration_s"] is not None for p in job["phases"])
    holdout = job["metrics"]["holdout"]
    assert 0.5 < holdout["auc"] <= 1.0 and holdout["logloss"] > 0 and holdout["rmse"] > 0
    for key in ("owner", "project", "trainer", "model_name", "model_description"):
        assert job[key] == spec[key]
    assert job["workflow_name"] == "StripeFraudModel"
    assert job["started_at"] and job["finished_at"] and job["error"] is None

    # The model at its URI is xgboost's own format and predicts.
    assert job["artifacts"]["model"].startswith("s3://railyard-artifacts/")
    booster = xgb.Booster()
    booster.load_model(bytearray(s3_bytes(job["artifacts"]["model"])))
    import json

    encoding = json.loads(s3_bytes(job["artifacts"]["model_dir"] + "/encoding.json"))
    sample = platform.fraud.slice(0, 50)
    predictions = booster.predict(xgb.DMatrix(encode(sample, encoding["encoding"]),
                                              enable_categorical=True))
    assert predictions.shape == (50,) and np.isfinite(predictions).all()

    log_text = client.logs(job["id"])
    assert "phase train finished" in log_text
    assert s3_bytes(job["artifacts"]["logs"]).decode() == log_text

    listed = client.list(owner=spec["owner"], limit=200)
    assert job["id"] in [j["id"] for j in listed["jobs"]]


def test_drivers_fork_from_the_nodes_warm_runner(platform, client):
    """The cluster's nodes have warm runners (railyard.execution.warm_runner): a job's driver is
    forked from one, with nothing left to import, and still behaves like any driver."""
    spec = sample_spec(platform.fraud_uri, source="s3")
    spec["model_name"] = "warm-driver"
    spec["train"]["custom_params"]["n_estimators"] = 10
    job = client.wait(client.submit(spec)["id"], timeout=120)
    assert job["status"] == "SUCCEEDED", job["error"]
    log_text = client.logs(job["id"])
    assert "running in a warm driver (forked from pid" in log_text, log_text[:2000]
    phases = {p["name"]: p["started_at"] for p in job["phases"]}
    # Nothing to import: the first phase starts within moments of the driver starting.
    started = dt.datetime.fromisoformat(job["started_at"])
    assert (dt.datetime.fromisoformat(phases["fetch"]) - started).total_seconds() < 1.0


def test_the_next_jobs_ray_supervisor_starts_in_a_standby_worker(platform, client):
    """After a job, the node's warm runner asks its raylet for an idle worker with the Ray
    job supervisor's runtime env (railyard.execution.standby_supervisor); the next job's
    JobSupervisor actor starts in that worker instead of a new Python process, and the worker
    imported Ray's job supervisor module as it started (railyard.cluster.node_env)."""
    from ray.util.state import list_actors

    from railyard.cluster.node_env import JOB_SUPERVISOR_MODULE
    from railyard.execution.standby_supervisor import NICENESS, standby_pids
    from tests.polling import wait_for

    spec = sample_spec(platform.fraud_uri, source="s3")
    spec["model_name"] = "standby-supervisor"
    spec["train"]["custom_params"]["n_estimators"] = 10
    first = client.wait(client.submit(spec)["id"], timeout=120)
    assert first["status"] == "SUCCEEDED", first["error"]
    ours = {NICENESS: "0",
            "RAILYARD_SECRETS_DIR": str(platform.settings.resolved_secrets_dir)}

    def preloaded(pid: int) -> bool:
        # The supervisor module brings aiohttp's C parser, which an idle Ray worker otherwise
        # never loads; the worker imports it after it shows as idle.
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert f"RAY_preload_python_modules={JOB_SUPERVISOR_MODULE}".encode() in environ
        return "aiohttp/_http_parser" in Path(f"/proc/{pid}/maps").read_text()

    standbys = wait_for(lambda: [pid for pid in standby_pids(ours) if preloaded(pid)],
                        timeout=60, what="a standby supervisor worker, supervisor imported")
    second = client.wait(client.submit(spec)["id"], timeout=120)
    assert second["status"] == "SUCCEEDED", second["error"]
    actors = list_actors(address=platform.ray_address, raise_on_missing_output=False,
                         filters=[("name", "=",
                                   f"_ray_internal_job_actor_{second['ray_submission_id']}")])
    assert len(actors) == 1 and actors[0].pid in standbys, (actors, standbys)


def test_rejected_spec_leaves_no_row(platform, client):
    with Session(platform.engine) as session:
        before = session.exec(select(func.count()).select_from(Job)).one()
    spec = sample_spec(platform.fraud_uri, source="s3")
    spec["train"]["label"] = "chargeback"
    try:
        client.submit(spec)
        raise AssertionError("expected a 422")
    except Exception as exc:  # noqa: BLE001
        assert getattr(exc, "status_code", None) == 422
        assert "train.label" in str(exc)
    missing = sample_spec("s3://railyard-data/nope", source="s3")
    try:
        client.submit(missing)
        raise AssertionError("expected a 422")
    except Exception as exc:  # noqa: BLE001
        assert getattr(exc, "status_code", None) == 422
        assert "data.features" in str(exc)
    with Session(platform.engine) as session:
        assert session.exec(select(func.count()).select_from(Job)).one() == before


def test_training_failure_is_a_failed_job_with_phase(platform, client):
    spec = sample_spec(platform.fraud_uri, source="s3")
    spec["data"]["filters"].append({"feature_name": "charge_amount", "predicate": "Gt",
                                    "feature_value": {"float_val": 1e12}})
    job = client.wait(client.submit(spec)["id"], timeout=60)
    assert job["status"] == "FAILED"
    assert job["error_phase"] == "split"
    assert "no training rows" in job["error"]
    assert "phase split failed" in client.logs(job["id"])
