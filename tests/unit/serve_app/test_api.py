"""API routes against a SQLite store, with the execution backend swapped for an in-memory one
(the real Ray backend is exercised in tests/integration)."""

from __future__ import annotations

import copy
import json

import pytest

from railyard.control.backend import BackendStatus
from railyard.jobstore import jobs
from railyard.jobstore.tables import JobStatus
from tests.fakes import FakeClock, build_env, job_count


@pytest.fixture()
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture()
def env(tmp_path, clock):
    return build_env(tmp_path, clock=clock)


def test_submit_stores_then_submits(env):
    client, service, backend, spec = env
    response = client.post("/v1/jobs", json=spec)
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["status"] == "PENDING" and job["id"].startswith("job-")
    assert backend.submitted == [f"railyard-{job['id']}"]
    got = client.get(f"/v1/jobs/{job['id']}").json()
    assert got["spec"] == json.loads(json.dumps(got["spec"]))
    assert got["owner"] == spec["owner"] and got["workflow_name"] == "StripeFraudModel"
    assert got["dataset"]["train_rows"] is None and got["metrics"] == {}


BAD_SPECS = {
    "unknown predicate": (lambda s: s["data"]["filters"][0].update(predicate="Near"),
                          "data.filters.0.predicate"),
    "wrong value type": (lambda s: s["data"]["filters"][2].update(
        feature_value={"string_val": "ten"}), "data.filters.2 (charge_amount)"),
    "missing label": (lambda s: s["train"].pop("label"), "train.label"),
    "label not fetched or derived": (lambda s: s["train"].update(label="chargeback"),
                                     "train.label"),
    "unknown workflow": (lambda s: s["train"].update(workflow_name="StripeFraudModle"),
                         "did you mean 'StripeFraudModel'"),
    "unknown field": (lambda s: s.update(ownr="x"), "ownr"),
    "unknown hyperparameter": (lambda s: s["train"]["custom_params"].update(max_dept=3),
                               "did you mean 'max_depth'"),
    "feature not fetched": (lambda s: s["train"]["classifier_features"].append("merchant_id"),
                            "train.classifier_features.3"),
}


@pytest.mark.parametrize("case", list(BAD_SPECS))
def test_bad_specs_are_422_naming_the_problem_and_store_nothing(env, case):
    client, service, backend, spec = env
    mutate, words = BAD_SPECS[case]
    bad = copy.deepcopy(spec)
    mutate(bad)
    response = client.post("/v1/jobs", json=bad)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert words in error["message"] or words in json.dumps(error["details"])
    assert job_count(service) == 0 and backend.submitted == []


def test_invalid_json_huge_body_and_non_object(env):
    client, service, backend, spec = env
    r = client.post("/v1/jobs", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "not valid JSON" in r.json()["error"]["message"]
    huge = copy.deepcopy(spec)
    huge["model_description"] = "x" * 100_000
    r = client.post("/v1/jobs", json=huge)
    assert r.status_code == 413 and "limit" in r.json()["error"]["message"]
    r = client.post("/v1/jobs", json=[1, 2])
    assert r.status_code == 422
    long_field = copy.deepcopy(spec)
    long_field["model_description"] = "x" * 5000
    r = client.post("/v1/jobs", json=long_field)
    assert r.status_code == 422 and "model_description" in r.json()["error"]["message"]
    assert job_count(service) == 0


def test_unknown_job_is_404_and_bad_query_is_422(env):
    client, *_ = env
    assert client.get("/v1/jobs/job-nope").status_code == 404
    assert client.get("/v1/jobs?status=DONE").status_code == 422
    assert client.get("/v1/jobs?limit=0").status_code == 422
    assert client.get("/v1/jobs?cursor=%%%").status_code == 422


def test_list_is_newest_first_and_paginates(env):
    client, service, backend, spec = env
    ids = [client.post("/v1/jobs", json=spec).json()["id"] for _ in range(5)]
    other = copy.deepcopy(spec)
    other["owner"] = "other-team"
    client.post("/v1/jobs", json=other)
    page = client.get("/v1/jobs", params={"owner": spec["owner"], "limit": 2}).json()
    seen = [j["id"] for j in page["jobs"]]
    while page["next_cursor"]:
        page = client.get("/v1/jobs", params={"owner": spec["owner"], "limit": 2,
                                              "cursor": page["next_cursor"]}).json()
        seen += [j["id"] for j in page["jobs"]]
    assert seen == list(reversed(ids))


def test_cancel_and_conflict(env):
    client, service, backend, spec = env
    job = client.post("/v1/jobs", json=spec).json()
    r = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "CANCELLED"
    assert backend.stopped == [job["ray_submission_id"]]
    r = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert r.status_code == 409 and "already CANCELLED" in r.json()["error"]["message"]


def test_dead_driver_is_reconciled_to_failed(env):
    client, service, backend, spec = env
    job = client.post("/v1/jobs", json=spec).json()
    jobs.transition(service.engine, job_id=job["id"], status=JobStatus.RUNNING)
    jobs.update_job(service.engine, job_id=job["id"], phase="train")
    backend.statuses[job["ray_submission_id"]] = BackendStatus("FAILED", "node died")
    got = client.get(f"/v1/jobs/{job['id']}").json()
    assert got["status"] == "FAILED" and got["error_phase"] == "train"
    assert "node died" in got["error"]


def test_cluster_down_keeps_job_queued_then_submits(env):
    client, service, backend, spec = env
    backend.available = False
    job = client.post("/v1/jobs", json=spec).json()
    assert job["status"] == "QUEUED" and backend.submitted == []
    backend.available = True
    got = client.get(f"/v1/jobs/{job['id']}").json()
    assert got["status"] == "PENDING" and backend.submitted == [f"railyard-{job['id']}"]


def test_workflows_health_and_openapi(env):
    client, *_ = env
    names = {w["name"] for w in client.get("/v1/workflows").json()}
    assert {"xgboost", "StripeFraudModel"} <= names
    assert client.get("/healthz").json() == {"status": "ok"}
    schema = client.get("/openapi.json").json()
    assert "TrainingSpec" in schema["components"]["schemas"]
    assert client.get("/docs").status_code == 200


def test_explicit_pool_is_enforced_and_waits_with_a_reason(env, clock):
    client, service, backend, spec = env
    backend.pools = {"cpu": 1}
    spec = copy.deepcopy(spec)
    spec["train"]["resources"] = {"pool": "gpu"}
    spec["lifecycle"] = {"pending_timeout_s": 1}
    job = client.post("/v1/jobs", json=spec).json()
    assert job["pool"] == "gpu"
    assert backend.placements[-1]["entrypoint_label_selector"] == {"railyard.io/pool": "gpu"}
    waiting = client.get(f"/v1/jobs/{job['id']}").json()
    assert waiting["status"] == "PENDING"
    assert "no alive node with label railyard.io/pool=gpu" in waiting["status_reason"]
    clock.advance(1.2)
    failed = client.get(f"/v1/jobs/{job['id']}").json()
    assert failed["status"] == "FAILED" and failed["error_phase"] == "pending"
    assert "pending timeout of 1s" in failed["error"]
    assert backend.stopped == [job["ray_submission_id"]]


def test_automatic_pool_is_enforced_only_where_the_cluster_has_pools(env):
    client, service, backend, spec = env
    job = client.post("/v1/jobs", json=spec).json()
    assert job["pool"] == "cpu" and "not enforced" in job["placement_reason"]
    assert backend.placements[-1] == {}
    backend.pools = {"cpu": 1, "highmem": 1}
    job = client.post("/v1/jobs", json=spec).json()
    assert backend.placements[-1]["entrypoint_label_selector"] == {"railyard.io/pool": "cpu"}


def test_unknown_pool_and_timeout_over_maximum_are_422(env):
    client, service, backend, spec = env
    bad = copy.deepcopy(spec)
    bad["train"]["resources"] = {"pool": "tpu"}
    r = client.post("/v1/jobs", json=bad)
    assert r.status_code == 422 and "train.resources.pool" in r.json()["error"]["message"]
    bad = copy.deepcopy(spec)
    bad["lifecycle"] = {"pending_timeout_s": 10**9}
    r = client.post("/v1/jobs", json=bad)
    assert r.status_code == 422 and "lifecycle.pending_timeout_s" in r.json()["error"]["message"]
    assert job_count(service) == 0
