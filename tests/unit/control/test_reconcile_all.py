"""The reconciler's tick asks Ray once (one listing of every Ray job), however many jobs are
active, and reconciles each from that listing. SQLite store, in-memory execution backend."""

from __future__ import annotations

import pytest

from railyard.control import capacity
from railyard.control.backend import BackendStatus
from railyard.jobstore import jobs
from tests.fakes import build_env


@pytest.fixture()
def env(tmp_path):
    capacity.forget()
    return build_env(tmp_path)


def test_one_tick_is_one_call_to_ray_for_every_active_job(env):
    client, service, backend, spec = env
    made = [client.post("/v1/jobs", json=spec).json() for _ in range(12)]
    backend.statuses[made[0]["ray_submission_id"]] = BackendStatus("FAILED", "node died")
    backend.statuses[made[1]["ray_submission_id"]] = BackendStatus("STOPPED")
    backend.status_calls = backend.list_calls = 0

    on_ray = [job for job in made if job["ray_submission_id"]]   # the pool queues the rest
    assert 0 < len(on_ray) < 12
    assert service.reconcile_all() == len(on_ray)
    assert (backend.list_calls, backend.status_calls) == (1, 0)
    stored = {job["id"]: jobs.get_job(service.engine, job_id=job["id"]) for job in made}
    assert stored[made[0]["id"]].status == "FAILED"
    assert "node died" in stored[made[0]["id"]].error
    assert stored[made[1]["id"]].status == "CANCELLED"
    assert all(stored[job["id"]].status == "PENDING" for job in made[2:])

    service.reconcile_all()                            # ended jobs are no longer asked about
    assert (backend.list_calls, backend.status_calls) == (2, 0)


def test_a_job_missing_from_the_listing_is_asked_about_alone(env):
    client, service, backend, spec = env
    job = client.post("/v1/jobs", json=spec).json()
    backend.submitted.remove(job["ray_submission_id"])     # Ray's listing lacks it
    backend.status_calls = backend.list_calls = 0
    service.reconcile_all()
    assert (backend.list_calls, backend.status_calls) == (1, 1)


def test_no_active_job_no_call_and_ray_down_changes_nothing(env):
    client, service, backend, spec = env
    backend.status_calls = backend.list_calls = 0
    service.reconcile_all()
    assert (backend.list_calls, backend.status_calls) == (0, 0)
    job = client.post("/v1/jobs", json=spec).json()
    backend.available = False
    backend.statuses[job["ray_submission_id"]] = BackendStatus("FAILED", "unseen")
    service.reconcile_all()
    assert jobs.get_job(service.engine, job_id=job["id"]).status == "PENDING"
    assert backend.status_calls == 0


def test_get_still_reconciles_one_job_with_its_own_call(env):
    client, service, backend, spec = env
    job = client.post("/v1/jobs", json=spec).json()
    backend.statuses[job["ray_submission_id"]] = BackendStatus("FAILED", "driver killed")
    backend.status_calls = backend.list_calls = 0
    assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "FAILED"
    assert (backend.list_calls, backend.status_calls) == (0, 1)


def test_the_ray_backend_lists_every_submission_in_one_request():
    """RayJobsBackend.list_statuses: one list_jobs; drivers started outside the Jobs API are
    left out; live answers feed the cache ``status`` reads, ended ones leave it."""
    from types import SimpleNamespace

    from railyard.control.backend import RayJobsBackend

    class Client:
        calls = 0

        def list_jobs(self):
            Client.calls += 1
            return [SimpleNamespace(submission_id="railyard-a", message=None,
                                    status=SimpleNamespace(value="RUNNING")),
                    SimpleNamespace(submission_id="railyard-b", message="done",
                                    status=SimpleNamespace(value="SUCCEEDED")),
                    SimpleNamespace(submission_id=None, message=None,
                                    status=SimpleNamespace(value="RUNNING"))]

        def get_job_info(self, submission_id):     # pragma: no cover - must not be called
            raise AssertionError("status came from the listing's cache")

    backend = RayJobsBackend("http://127.0.0.1:1", status_max_age_s=60)
    backend._client = Client()  # type: ignore[assignment]
    listed = backend.list_statuses()
    assert listed == {"railyard-a": BackendStatus("RUNNING"),
                      "railyard-b": BackendStatus("SUCCEEDED", "done")}
    assert Client.calls == 1
    assert backend.status("railyard-a") == BackendStatus("RUNNING")
