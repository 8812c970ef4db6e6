"""The MLflow exporter on a SQLite store with MLflow down (a closed port): the job stays
SUCCEEDED, the export is retried on a doubling schedule with its error shown on
GET /v1/jobs/{id}/mlflow, and fails for good after the last attempt. The export itself, against
a real `mlflow server`, is tests/integration/test_mlflow_export.py."""

from __future__ import annotations

from datetime import UTC, timedelta

import pytest

from railyard.control.mlflow_export import (
    MlflowExporter,
    experiment_name,
    holdout_metrics,
    registered_name,
    retry_delay,
    run_tags,
)
from railyard.jobstore import jobs, mlflow_exports, registry
from railyard.jobstore.tables import JobStatus, utcnow
from tests.fakes import TEAM_A, TEAM_B, ApiPlatform
from tests.servers import free_port


def never_loaded(uri, artifacts):
    raise AssertionError("the model is loaded only once MLflow answered")


@pytest.fixture()
def plat(tmp_path) -> ApiPlatform:
    return ApiPlatform(tmp_path, mlflow_tracking_uri=f"http://127.0.0.1:{free_port()}",
                       mlflow_retry_base_s=5.0, mlflow_max_attempts=3)


def succeeded_job(plat: ApiPlatform, who: str = TEAM_A) -> str:
    answer = plat.submit(who)
    assert answer.status_code == 201, answer.text
    job_id = answer.json()["id"]
    engine = plat.service.engine
    jobs.update_job(engine, job_id=job_id,
                    metrics={"holdout": {"auc": 0.91, "rows": 120, "note": "x",
                                         "nan": float("nan")}})
    assert jobs.transition(engine, job_id=job_id, status=JobStatus.SUCCEEDED)
    registry.register_succeeded(engine, job=jobs.get_job(engine, job_id=job_id))
    return job_id


def mlflow_state(plat: ApiPlatform, job_id: str, who: str = TEAM_A) -> dict:
    answer = plat.http.get(f"/v1/jobs/{job_id}/mlflow", headers=plat.headers(who))
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_mlflow_down_retries_with_backoff_and_never_fails_the_job(plat):
    job_id = succeeded_job(plat)
    engine = plat.service.engine
    exporter = MlflowExporter(engine, plat.settings, load_model=never_loaded)
    assert mlflow_state(plat, job_id)["status"] == "none"

    before = utcnow()
    assert exporter.tick() == 0
    state = mlflow_state(plat, job_id)
    assert state["enabled"] is True
    assert state["status"] == "pending" and state["attempts"] == 1
    assert "onnect" in state["error"], state["error"]         # connection refused
    row = mlflow_exports.get(engine, job_id=job_id)
    assert row is not None and row.next_attempt_at is not None
    due_at = row.next_attempt_at.replace(tzinfo=row.next_attempt_at.tzinfo or UTC)
    assert timedelta(seconds=4) < due_at - before < timedelta(seconds=10)
    # Not due yet: the next pass leaves it alone.
    exporter.tick()
    assert mlflow_exports.get(engine, job_id=job_id).attempts == 1
    # Due later (attempt 2, then the last one): failed for good, the job untouched.
    for attempts in (2, 3):
        exporter.attempt(mlflow_exports.get(engine, job_id=job_id))
        assert mlflow_exports.get(engine, job_id=job_id).attempts == attempts
    state = mlflow_state(plat, job_id)
    assert state["status"] == "failed" and state["error"] and state["run_id"] is None
    assert jobs.get_job(engine, job_id=job_id).status == JobStatus.SUCCEEDED
    assert mlflow_exports.due(engine, now=utcnow() + timedelta(days=1)) == []
    # A retry by hand (POST …/mlflow/retry, the job's team or an admin) makes it pending
    # and due again, its attempts counted afresh.
    url = f"/v1/jobs/{job_id}/mlflow/retry"
    assert plat.http.post(url, headers=plat.headers(TEAM_B)).status_code in (403, 404)
    retried = plat.http.post(url, headers=plat.headers(TEAM_A))
    assert retried.status_code == 200, retried.text
    assert (retried.json()["status"], retried.json()["attempts"]) == ("pending", 0)
    assert [r.job_id for r in mlflow_exports.due(engine)] == [job_id]


def test_a_retry_with_nothing_to_retry_is_a_409_saying_why(plat, tmp_path):
    queued = plat.submit(TEAM_A).json()["id"]
    answer = plat.http.post(f"/v1/jobs/{queued}/mlflow/retry", headers=plat.headers(TEAM_A))
    assert answer.status_code == 409 and "only SUCCEEDED jobs" in answer.text
    off = ApiPlatform(tmp_path / "off")
    job_id = off.submit(TEAM_A).json()["id"]
    answer = off.http.post(f"/v1/jobs/{job_id}/mlflow/retry", headers=off.headers(TEAM_A))
    assert answer.status_code == 409 and "RAILYARD_MLFLOW_TRACKING_URI" in answer.text


def test_only_registered_jobs_are_enqueued_once(plat):
    job_id = succeeded_job(plat)
    queued = plat.submit(TEAM_A).json()["id"]          # never succeeds: nothing to export
    engine = plat.service.engine
    assert mlflow_exports.enqueue_new(engine) == [job_id]
    assert mlflow_exports.enqueue_new(engine) == []
    assert mlflow_exports.get(engine, job_id=queued) is None


def test_the_state_is_scoped_to_the_jobs_team(plat):
    job_id = succeeded_job(plat)
    answer = plat.http.get(f"/v1/jobs/{job_id}/mlflow", headers=plat.headers(TEAM_B))
    assert answer.status_code in (403, 404)


def test_no_tracking_uri_no_exporter(tmp_path):
    plat = ApiPlatform(tmp_path)
    with pytest.raises(ValueError, match="RAILYARD_MLFLOW_TRACKING_URI"):
        MlflowExporter(plat.service.engine, plat.settings, load_model=never_loaded)
    assert mlflow_state(plat, succeeded_job(plat))["enabled"] is False


def test_retry_delay_doubles_up_to_an_hour():
    assert [retry_delay(n, 10.0) for n in (1, 2, 3, 4)] == [10.0, 20.0, 40.0, 80.0]
    assert retry_delay(30, 10.0) == 3600.0


def test_names_tags_and_metrics(plat):
    job = jobs.get_job(plat.service.engine, job_id=succeeded_job(plat))
    assert experiment_name(job) == f"{TEAM_A}/{job.project}"
    assert registered_name(job.owner, job.model_name) == f"{TEAM_A}.{job.model_name}"
    tags = run_tags(job, 3)
    assert tags["railyard.job_id"] == job.id and tags["railyard.owner"] == TEAM_A
    assert tags["railyard.trainer"] == job.trainer
    assert tags["railyard.spec_hash"] == job.spec_hash and tags["railyard.version"] == "3"
    # Numbers only, finite, under the names of metrics.holdout.
    assert holdout_metrics(job) == {"auc": 0.91, "rows": 120.0}


def test_alias_moves_and_exported_versions_drive_the_mirror(plat):
    engine = plat.service.engine
    first, second = succeeded_job(plat), succeeded_job(plat)
    job = jobs.get_job(engine, job_id=first)
    mlflow_exports.enqueue_new(engine)
    # Only versions with an MLflow version are mirrored; MLflow numbers may differ.
    mlflow_exports.record_progress(engine, job_id=second, registered_name="r.m",
                                   mlflow_version=7)
    assert mlflow_exports.exported_versions(engine, owner=job.owner, name=job.model_name) == {
        2: ("r.m", 7)}
    models, last = mlflow_exports.alias_moves_after(engine, after_id=0)
    assert (models, last) == (set(), 0)
    registry.set_alias(engine, owner=job.owner, name=job.model_name, alias="production",
                       version=2, actor="t", reason="person")
    models, last = mlflow_exports.alias_moves_after(engine, after_id=0)
    assert models == {(job.owner, job.model_name)} and last > 0
    assert mlflow_exports.alias_moves_after(engine, after_id=last) == (set(), last)
