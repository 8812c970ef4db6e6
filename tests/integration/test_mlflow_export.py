"""MLflow export on the real stack: the platform's API exports every SUCCEEDED job to a real
`mlflow server` (tests.servers.mlflow_server: its own SQLite backend, artifacts on the S3
server). The run carries the job's tags, effective hyperparameters and exactly its holdout
metrics; two jobs of one model are registered versions 1 and 2; Railyard's aliases are mirrored
(the gate's, and a move by hand afterwards); ``mlflow.pyfunc.load_model`` predicts what
``railyard predict`` does; with the MLflow server stopped a job still SUCCEEDS, its export
waits (pending, the connection error shown) and catches up once the server is back."""

from __future__ import annotations

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient
from mlflow.pyfunc import load_model as load_pyfunc

from railyard.client.sdk import RailyardClient
from railyard.data.demo import fraud_table, sample_spec
from railyard.jobstore import jobs, tokens
from tests.integration.support import DATA_BUCKET, invoke_cli, upload_table
from tests.polling import wait_for

TEAM, PROJECT, MODEL = "mlflow-team", "mlflow-project", "mlflow-fraud"
FEATURES = ["charge_amount", "merchant_id"]
REGISTERED = f"{TEAM}.{MODEL}"
EXPORT_TIMEOUT_S = 180


@pytest.fixture(scope="module")
def team(platform):
    token, _ = tokens.issue(platform.engine, team=TEAM)
    with RailyardClient(platform.api_url, token=token) as c:
        yield c, token


@pytest.fixture(scope="module")
def mlflow_client(platform, mlflow) -> MlflowClient:
    return MlflowClient(tracking_uri=mlflow.url, registry_uri=mlflow.url)


@pytest.fixture(scope="module")
def data_uri(platform) -> str:
    return upload_table(fraud_table(4000, seed=31), DATA_BUCKET, "mlflow/fraud", files=2)


def fraud_spec(data_uri: str, max_depth: int) -> dict:
    """An XGBoost job of the model on numeric features, with the gate on auc."""
    spec = sample_spec(data_uri, source="s3")
    spec["data"]["features"][0]["names"].append("merchant_id")
    spec.update(owner=TEAM, project=PROJECT, model_name=MODEL,
                promotion={"alias": "production", "metric": "auc", "min_delta": 0.0})
    spec["train"]["classifier_features"] = FEATURES
    spec["train"]["custom_params"].update(objective="binary:logistic", n_estimators=15,
                                          max_depth=max_depth, seed=42, nthread=1)
    return spec


def succeeded(client: RailyardClient, spec: dict) -> dict:
    job = client.wait(client.submit(spec)["id"], timeout=240)
    assert job["status"] == "SUCCEEDED", (job["error"], client.events(job["id"]))
    return job


@pytest.fixture(scope="module")
def exported(platform, team, data_uri):
    """Two jobs of one model, each waited for until exported: [(job, export state)]."""
    client, token = team
    out = []
    for depth in (3, 4):
        job = succeeded(client, fraud_spec(data_uri, depth))
        out.append((job, wait_exported(platform, token, job["id"])))
    return out


def export_state(platform, token: str, job_id: str) -> dict:
    response = httpx.get(f"{platform.api_url}/v1/jobs/{job_id}/mlflow",
                         headers={"Authorization": f"Bearer {token}"}, timeout=10)
    response.raise_for_status()
    return response.json()


def wait_exported(platform, token: str, job_id: str) -> dict:
    def done() -> dict | None:
        state = export_state(platform, token, job_id)
        assert state["status"] != "failed", state
        return state if state["status"] == "exported" else None

    return wait_for(done, EXPORT_TIMEOUT_S, f"job {job_id}'s MLflow export", interval=1.0)


def test_run_has_the_jobs_tags_params_and_metrics(platform, exported, mlflow_client):
    for job, state in exported:
        assert state["enabled"] is True and state["error"] is None
        run = mlflow_client.get_run(state["run_id"])
        experiment = mlflow_client.get_experiment(run.info.experiment_id)
        assert experiment.name == f"{TEAM}/{PROJECT}"
        assert run.info.status == "FINISHED" and run.info.run_name == job["id"]
        tags = run.data.tags
        assert {k: tags.get(k) for k in ("railyard.job_id", "railyard.owner",
                                         "railyard.trainer", "railyard.spec_hash")} == {
            "railyard.job_id": job["id"], "railyard.owner": TEAM,
            "railyard.trainer": job["trainer"],
            "railyard.spec_hash": jobs.get_job(platform.engine, job_id=job["id"]).spec_hash}
        assert tags["railyard.model_flavour"] == "xgboost"
        holdout = job["metrics"]["holdout"]
        assert holdout and run.data.metrics == {k: float(v) for k, v in holdout.items()}
        # The effective hyperparameters: the workflow's parameters as it trained (the spec's
        # here; the XGBoost parameters it left out default to None, XGBoost's own defaults).
        spec_params = job["spec"]["train"]["custom_params"]
        assert set(run.data.params) == set(spec_params)
        for name, value in spec_params.items():
            logged = run.data.params[name]
            assert logged == str(value) if isinstance(value, str) \
                else float(logged) == float(value), (name, logged, value)


def test_two_jobs_are_versions_one_and_two_with_the_alias_mirrored(platform, exported, team,
                                                                   mlflow_client):
    client, _ = team
    versions = {int(v.version): v for v in
                mlflow_client.search_model_versions(f"name = '{REGISTERED}'")}
    assert sorted(versions) == [1, 2]
    for number, (job, state) in zip((1, 2), exported, strict=True):
        assert state["registered_name"] == REGISTERED and state["mlflow_version"] == number
        assert versions[number].run_id == state["run_id"]
        assert versions[number].tags["railyard.job_id"] == job["id"]
    # The gate's alias, as Railyard has it (Railyard versions are MLflow versions here).
    railyard_production = client.alias(TEAM, MODEL, "production")["version"]
    assert mlflow_client.get_registered_model(REGISTERED).aliases == {
        "production": str(railyard_production)}
    # A move by hand afterwards is mirrored too.
    other = 1 if railyard_production == 2 else 2
    client.set_alias(TEAM, MODEL, "production", other)
    client.set_alias(TEAM, MODEL, "staging", railyard_production)
    wait_for(lambda: mlflow_client.get_registered_model(REGISTERED).aliases == {
        "production": str(other), "staging": str(railyard_production)},
        60, "the MLflow aliases to follow Railyard's", interval=0.5)
    client.delete_alias(TEAM, MODEL, "staging")
    wait_for(lambda: mlflow_client.get_registered_model(REGISTERED).aliases == {
        "production": str(other)}, 60, "the deleted alias to go from MLflow", interval=0.5)


def test_pyfunc_predicts_what_railyard_predict_does(platform, exported, team, mlflow,
                                                    tmp_path, monkeypatch):
    _, token = team
    rows = fraud_table(200, seed=5)
    rows_file = tmp_path / "rows.parquet"
    pq.write_table(rows, rows_file)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow.url)
    for number, (job, _state) in zip((1, 2), exported, strict=True):
        out = tmp_path / f"out-{number}.parquet"
        result = invoke_cli(
            ["predict", job["id"], str(rows_file), str(out)],
            env={"RAILYARD_API_URL": platform.api_url, "RAILYARD_TOKEN": token})
        assert result.exit_code == 0, result.output
        expected = pq.read_table(out)["prediction"].to_numpy()
        model = load_pyfunc(f"models:/{REGISTERED}/{number}")
        frame = rows.select(FEATURES).to_pandas().astype("float64")
        got = np.asarray(model.predict(frame))
        np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_mlflow_down_never_fails_a_job_and_the_export_catches_up(platform, exported, team,
                                                                 data_uri, mlflow,
                                                                 mlflow_client):
    """Last in the module: it stops the session's MLflow server for one job's time."""
    client, token = team
    mlflow.stop()
    try:
        job = succeeded(client, fraud_spec(data_uri, 5))

        def failed_once() -> dict | None:
            state = export_state(platform, token, job["id"])
            return state if state["attempts"] >= 1 else None

        state = wait_for(failed_once, 60, "a failed export attempt", interval=0.5)
        assert state["status"] == "pending" and state["run_id"] is None, state
        assert "onnect" in state["error"], state       # connection refused
    finally:
        mlflow.start()
    state = wait_exported(platform, token, job["id"])
    assert state["mlflow_version"] == 3 and state["attempts"] >= 2
    run = mlflow_client.get_run(state["run_id"])
    assert run.data.metrics == {k: float(v) for k, v in job["metrics"]["holdout"].items()}
