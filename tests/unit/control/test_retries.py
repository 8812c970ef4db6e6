"""Retries: attempts numbered and kept, separate budgets for infrastructure and user-code
failures, the runner's heartbeat, and state writes that wait out a database outage.

The API runs on SQLite with the in-memory backend of tests/fakes.py (Ray's side of retries, a
killed driver resubmitted as attempt 2, is in tests/integration/test_faults.py)."""

from __future__ import annotations

import copy
from datetime import timedelta

import pytest
from sqlalchemy.exc import OperationalError, ProgrammingError

from railyard.control.backend import BackendStatus
from railyard.jobstore import jobs
from railyard.jobstore.retries import classify, end_failed_attempt
from railyard.jobstore.retrying_store import call_with_db_retry
from railyard.jobstore.tables import FailureKind, JobStatus, utcnow
from tests.fakes import build_env


@pytest.fixture()
def env(tmp_path):
    return build_env(tmp_path)


def _running(service, job_id: str, phase: str = "train") -> None:
    job = jobs.get_job(service.engine, job_id=job_id)
    jobs.transition(service.engine, job_id=job_id, status=JobStatus.RUNNING,
                     heartbeat_at=utcnow())
    jobs.start_attempt(service.engine, job_id=job_id, attempt=job.attempt,
                        ray_submission_id=job.ray_submission_id)
    jobs.update_job(service.engine, job_id=job_id, phase=phase)


def _with_lifecycle(spec: dict, model_name: str | None = None, **lifecycle) -> dict:
    spec = copy.deepcopy(spec)
    spec["lifecycle"] = lifecycle
    if model_name:
        spec["model_name"] = model_name
    return spec


def test_a_dead_driver_is_retried_as_a_new_numbered_attempt(env):
    client, service, backend, spec = env
    job = client.post("/v1/jobs", json=_with_lifecycle(spec, max_retries=1)).json()
    _running(service, job["id"])
    backend.statuses[job["ray_submission_id"]] = BackendStatus("FAILED", "node died")

    got = client.get(f"/v1/jobs/{job['id']}").json()
    assert got["status"] == "PENDING" and got["attempt"] == 2
    assert got["ray_submission_id"] == f"railyard-{job['id']}-attempt-2"
    assert backend.submitted == [f"railyard-{job['id']}", f"railyard-{job['id']}-attempt-2"]

    _running(service, job["id"], phase="fetch")
    backend.statuses[got["ray_submission_id"]] = BackendStatus("FAILED", "node died again")
    final = client.get(f"/v1/jobs/{job['id']}").json()
    assert final["status"] == "FAILED" and final["error_phase"] == "fetch"
    assert "node died again" in final["error"] and final["attempt"] == 2

    attempts = client.get(f"/v1/jobs/{job['id']}/attempts").json()
    assert [(a["attempt"], a["status"], a["failure_kind"], a["error_phase"])
            for a in attempts] == [(1, "FAILED", "infrastructure", "train"),
                                   (2, "FAILED", "infrastructure", "fetch")]
    kinds = [e["kind"] for e in client.get(f"/v1/jobs/{job['id']}/events").json()]
    assert kinds.count("retry") == 1 and kinds.count("attempt_started") == 2


def test_without_retries_a_dead_driver_fails_at_once(env):
    client, service, backend, spec = env
    job = client.post("/v1/jobs", json=spec).json()
    _running(service, job["id"])
    backend.statuses[job["ray_submission_id"]] = BackendStatus("FAILED", "driver killed")
    got = client.get(f"/v1/jobs/{job['id']}").json()
    assert got["status"] == "FAILED" and got["attempt"] == 1
    assert len(backend.submitted) == 1
    assert [a["status"] for a in client.get(f"/v1/jobs/{job['id']}/attempts").json()] \
        == ["FAILED"]


def test_user_code_failures_have_their_own_budget(env):
    client, service, backend, spec = env
    infra_only = client.post("/v1/jobs", json=_with_lifecycle(spec, max_retries=3)).json()
    _running(service, infra_only["id"])
    job = jobs.get_job(service.engine, job_id=infra_only["id"])
    retried = end_failed_attempt(service.engine, job=job, kind=FailureKind.USER_CODE,
                                 error="ValueError: bad column", phase="train",
                                 server_max_retries=5)
    assert not retried
    assert jobs.get_job(service.engine, job_id=job.id).status == "FAILED"

    asked = client.post("/v1/jobs", json=_with_lifecycle(
        spec, model_name="retry-user-errors", max_user_code_retries=1)).json()
    _running(service, asked["id"])
    job = jobs.get_job(service.engine, job_id=asked["id"])
    assert end_failed_attempt(service.engine, job=job, kind=FailureKind.USER_CODE,
                              error="ValueError: flaky", phase="train", server_max_retries=5)
    again = client.get(f"/v1/jobs/{asked['id']}").json()      # the reconciler submits it
    assert again["status"] == "PENDING" and again["attempt"] == 2
    assert again["phases"] == []                              # attempt 1's phases are history


def test_cancel_and_timeouts_close_the_attempt_and_are_not_retried(env):
    client, service, backend, spec = env
    job = client.post("/v1/jobs", json=_with_lifecycle(spec, max_retries=2)).json()
    _running(service, job["id"])
    assert client.post(f"/v1/jobs/{job['id']}/cancel").json()["status"] == "CANCELLED"
    backend.statuses[job["ray_submission_id"]] = BackendStatus("STOPPED")
    assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "CANCELLED"
    assert [a["status"] for a in client.get(f"/v1/jobs/{job['id']}/attempts").json()] \
        == ["CANCELLED"]

    timed = client.post("/v1/jobs", json=_with_lifecycle(
        spec, model_name="short", max_retries=2, run_timeout_s=1)).json()
    _running(service, timed["id"])
    jobs.update_job(service.engine, job_id=timed["id"],
                     started_at=utcnow() - timedelta(seconds=5))
    backend.statuses[timed["ray_submission_id"]] = BackendStatus("RUNNING")
    got = client.get(f"/v1/jobs/{timed['id']}").json()
    assert got["status"] == "FAILED" and "run timeout" in got["error"] and got["attempt"] == 1


def test_a_silent_driver_is_stopped_and_retried(env):
    client, service, backend, spec = env
    job = client.post("/v1/jobs", json=_with_lifecycle(spec, max_retries=1)).json()
    _running(service, job["id"])
    backend.statuses[job["ray_submission_id"]] = BackendStatus("RUNNING")
    assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "RUNNING"  # fresh beat

    late = utcnow() - timedelta(seconds=service.settings.heartbeat_timeout_s + 5)
    jobs.update_job(service.engine, job_id=job["id"], heartbeat_at=late)
    got = client.get(f"/v1/jobs/{job['id']}").json()
    assert backend.stopped == [job["ray_submission_id"]]
    assert got["status"] == "PENDING" and got["attempt"] == 2
    first = client.get(f"/v1/jobs/{job['id']}/attempts").json()[0]
    assert "no heartbeat" in first["error"] and first["failure_kind"] == "infrastructure"


def test_retries_over_the_server_maximum_are_422(env):
    client, service, backend, spec = env
    too_many = service.settings.max_retries + 1
    for field in ("max_retries", "max_user_code_retries"):
        r = client.post("/v1/jobs", json=_with_lifecycle(spec, **{field: too_many}))
        assert r.status_code == 422 and f"lifecycle.{field}" in r.json()["error"]["message"]


def test_failures_are_classified_by_their_cause():
    import ray.exceptions as rex

    assert classify(ValueError("bad label")) is FailureKind.USER_CODE
    assert classify(rex.NodeDiedError("node gone")) is FailureKind.INFRASTRUCTURE
    assert classify(OperationalError("SELECT 1", {}, Exception("connection refused"))) \
        is FailureKind.INFRASTRUCTURE
    try:
        try:
            raise rex.WorkerCrashedError()
        except rex.WorkerCrashedError as crash:
            raise RuntimeError("training failed") from crash
    except RuntimeError as wrapped:
        assert classify(wrapped) is FailureKind.INFRASTRUCTURE


def test_state_writes_wait_out_an_unreachable_database():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise OperationalError("UPDATE job", {}, Exception("server closed the connection"))
        return "written"

    assert call_with_db_retry(flaky, first_delay_s=0.01) == "written" and len(calls) == 3

    def broken():
        raise ProgrammingError("UPDATE jobb", {}, Exception("no such table"))

    with pytest.raises(ProgrammingError):             # a real bug is not retried
        call_with_db_retry(broken, first_delay_s=0.01)

    def down():
        raise OperationalError("UPDATE job", {}, Exception("connection refused"))

    with pytest.raises(OperationalError):             # and an outage ends at the deadline
        call_with_db_retry(down, deadline_s=0.05, first_delay_s=0.01)
