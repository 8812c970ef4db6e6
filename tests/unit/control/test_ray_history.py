"""Ray's record of a finished Railyard job is deleted RAILYARD_RAY_JOB_RETENTION_S after its Ray
job ended (railyard.control.ray_history), by the reconciler's tick, at most once a minute. SQLite
store, in-memory execution backend; RayJobsBackend.list_ended with a stand-in for Ray's SDK."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from railyard.control import capacity, ray_history
from railyard.control.backend import BackendStatus, RayJobsBackend
from railyard.jobstore import jobs
from tests.fakes import FakeClock, build_env


@pytest.fixture()
def env(tmp_path):
    capacity.forget()
    clock = FakeClock()
    client, service, backend, spec = build_env(tmp_path, clock=clock)
    return client, service, backend, spec, clock


def cancelled_on_ray(client, backend, spec, clock) -> dict:
    """A job cancelled by request, whose Ray job ended now."""
    job = client.post("/v1/jobs", json=spec).json()
    assert job["ray_submission_id"], job
    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
    backend.statuses[job["ray_submission_id"]] = BackendStatus("STOPPED")
    backend.ended_at[job["ray_submission_id"]] = clock().timestamp()
    return job


def test_a_finished_jobs_ray_record_is_deleted_once_its_retention_has_passed(env):
    client, service, backend, spec, clock = env
    job = cancelled_on_ray(client, backend, spec, clock)
    retention = service.settings.ray_job_retention_s
    clock.advance(retention - 30)
    service.reconcile_all()
    assert backend.deleted == []                           # not yet
    clock.advance(40)
    service.reconcile_all()
    assert backend.deleted == []                           # looked less than a minute ago
    clock.advance(ray_history.PRUNE_INTERVAL_S)
    service.reconcile_all()
    assert backend.deleted == [job["ray_submission_id"]]
    assert jobs.get_job(service.engine, job_id=job["id"]).status == "CANCELLED"  # ours stays


def test_an_ended_attempt_of_a_job_still_running_is_kept(env):
    client, service, backend, spec, clock = env
    job = client.post("/v1/jobs", json=spec).json()
    sid = job["ray_submission_id"]
    backend.statuses[sid] = BackendStatus("FAILED", "an earlier attempt")
    backend.ended_at[sid] = clock().timestamp() - 10 * service.settings.ray_job_retention_s
    deleted = ray_history.prune(service.engine, backend, now=clock(),
                                retention_s=service.settings.ray_job_retention_s)
    assert deleted == 0 and backend.deleted == []
    assert jobs.get_job(service.engine, job_id=job["id"]).status == "PENDING"


def test_retention_zero_keeps_every_record_and_ray_down_stops_nothing(env):
    client, service, backend, spec, clock = env
    job = cancelled_on_ray(client, backend, spec, clock)
    clock.advance(10 * service.settings.ray_job_retention_s)
    assert ray_history.prune(service.engine, backend, now=clock(), retention_s=0) == 0
    backend.available = False
    service.reconcile_all()                                # logs a warning, raises nothing
    assert backend.deleted == []
    backend.available = True
    assert ray_history.prune(service.engine, backend, now=clock(),
                             retention_s=service.settings.ray_job_retention_s) == 1
    assert backend.deleted == [job["ray_submission_id"]]


def test_deletes_stop_at_the_cap_and_the_rest_go_next_time(env):
    client, service, backend, spec, clock = env
    made = [cancelled_on_ray(client, backend, spec, clock) for _ in range(3)]
    clock.advance(2 * service.settings.ray_job_retention_s)
    kwargs = dict(now=clock(), retention_s=service.settings.ray_job_retention_s)
    assert ray_history.prune(service.engine, backend, max_deletes=2, **kwargs) == 2
    assert ray_history.prune(service.engine, backend, max_deletes=2, **kwargs) == 1
    assert sorted(backend.deleted) == sorted(job["ray_submission_id"] for job in made)


def details(submission_id, status, end_time_s, metadata):
    return SimpleNamespace(submission_id=submission_id, status=SimpleNamespace(value=status),
                           end_time=None if end_time_s is None else int(end_time_s * 1000),
                           message=None, metadata=metadata)


def test_ray_backend_lists_only_railyards_ended_jobs_before_the_cutoff():
    listed = [details("railyard-a", "SUCCEEDED", 100, {"railyard_job_id": "a"}),
              details("railyard-b", "FAILED", 300, {"railyard_job_id": "b"}),   # too recent
              details("railyard-c", "RUNNING", None, {"railyard_job_id": "c"}),
              details("raysubmit_x", "SUCCEEDED", 100, {}),                      # not ours
              details(None, "SUCCEEDED", 100, None)]                             # a driver
    backend = RayJobsBackend("http://127.0.0.1:1")
    backend._client = SimpleNamespace(list_jobs=lambda: listed)
    assert backend.list_ended(200) == {"railyard-a": "a"}
