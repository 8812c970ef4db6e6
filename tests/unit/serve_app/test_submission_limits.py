"""Idempotency keys and the per-team concurrency limit on POST /v1/jobs (SQLite store,
in-memory execution backend)."""

from __future__ import annotations

import concurrent.futures
import copy

import pytest

from railyard.control.access import Caller
from railyard.jobstore import jobs, tokens
from railyard.jobstore.tables import JobStatus
from tests.fakes import TEAM_A, TEAM_B, ApiPlatform


@pytest.fixture()
def plat(tmp_path) -> ApiPlatform:
    return ApiPlatform(tmp_path, max_concurrent_jobs_per_team=2)


def post(plat: ApiPlatform, who: str, spec: dict, key: str | None = None):
    headers = plat.headers(who) | ({"Idempotency-Key": key} if key else {})
    return plat.http.post("/v1/jobs", json=spec, headers=headers)


def test_same_key_and_body_returns_the_first_job(plat):
    spec = plat.spec(TEAM_A)
    first = post(plat, TEAM_A, spec, key="nightly-2026-11-27")
    assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers
    reordered = dict(reversed(list(copy.deepcopy(spec).items())))   # key order does not count
    again = post(plat, TEAM_A, reordered, key="nightly-2026-11-27")
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert len(jobs.list_jobs(plat.service.engine)[0]) == 1
    assert plat.backend.submitted == [f"railyard-{first.json()['id']}"]


def test_same_key_with_another_body_is_409(plat):
    spec = plat.spec(TEAM_A)
    first = post(plat, TEAM_A, spec, key="k1").json()
    changed = copy.deepcopy(spec)
    changed["model_name"] = "something_else"
    r = post(plat, TEAM_A, changed, key="k1")
    assert r.status_code == 409
    error = r.json()["error"]
    assert error["type"] == "ConflictError" and first["id"] in error["message"]
    assert "new key" in error["message"]
    assert len(jobs.list_jobs(plat.service.engine)[0]) == 1


def test_keys_are_per_team_and_without_a_key_every_post_is_a_new_job(plat):
    a = post(plat, TEAM_A, plat.spec(TEAM_A), key="shared").json()
    b = post(plat, TEAM_B, plat.spec(TEAM_B), key="shared")
    assert b.status_code == 201 and b.json()["id"] != a["id"]
    c = post(plat, TEAM_A, plat.spec(TEAM_A)).json()
    d = post(plat, TEAM_A, plat.spec(TEAM_A)).json()
    assert len({a["id"], b.json()["id"], c["id"], d["id"]}) == 4


def test_bad_keys_are_422_and_a_rejected_spec_does_not_use_up_the_key(plat):
    for key in ("x" * 256, "na\u00efve".encode("latin-1"), "tab\there"):
        r = plat.http.post("/v1/jobs", json=plat.spec(TEAM_A),
                           headers=plat.headers(TEAM_A) | {"Idempotency-Key": key})
        assert r.status_code == 422 and "Idempotency-Key" in r.json()["error"]["message"]
    bad = plat.spec(TEAM_A)
    bad["train"]["workflow_name"] = "NoSuchWorkflow"
    assert post(plat, TEAM_A, bad, key="retry-me").status_code == 422
    assert post(plat, TEAM_A, plat.spec(TEAM_A), key="retry-me").status_code == 201


def test_concurrent_requests_with_one_key_make_one_job(plat):
    caller = Caller(team=TEAM_A)
    spec = plat.spec(TEAM_A)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: plat.service.create(copy.deepcopy(spec),
                                                              caller=caller,
                                                              idempotency_key="race"),
                                range(8)))
    assert len({r.job.id for r in results}) == 1
    assert sum(not r.replayed for r in results) == 1
    assert len(jobs.list_jobs(plat.service.engine)[0]) == 1


def test_jobs_over_the_team_limit_wait_queued_then_start_in_order(plat):
    ids = [post(plat, TEAM_A, plat.spec(TEAM_A)).json() for _ in range(4)]
    assert [j["status"] for j in ids] == ["PENDING", "PENDING", "QUEUED", "QUEUED"]
    waiting = ids[2]
    assert waiting["ray_submission_id"] is None
    assert waiting["status_reason"] == ("queued: position 1 of 1 in pool cpu (team 'team-a' at "
                                        "its limit of 2 running)")
    assert ids[3]["status_reason"].startswith("queued: position 2 of 2 in pool cpu")
    # Another team is not held up.
    assert post(plat, TEAM_B, plat.spec(TEAM_B)).json()["status"] == "PENDING"
    assert len(plat.backend.submitted) == 3
    events = plat.http.get(f"/v1/jobs/{waiting['id']}/events", headers=plat.headers(TEAM_A))
    assert [e["kind"] for e in events.json()].count("queued") == 1

    plat.service.reconcile_all()                               # nothing finished: still waiting
    assert jobs.get_job(plat.service.engine, job_id=waiting["id"]).status == "QUEUED"

    jobs.transition(plat.service.engine, job_id=ids[0]["id"], status=JobStatus.SUCCEEDED)
    # Reading the later job first must not let it jump the queue.
    later = plat.http.get(f"/v1/jobs/{ids[3]['id']}", headers=plat.headers(TEAM_A)).json()
    assert later["status"] == "QUEUED"
    plat.service.reconcile_all()
    started = jobs.get_job(plat.service.engine, job_id=waiting["id"])
    assert started.status == "PENDING" and started.status_reason is None
    assert plat.backend.submitted[-1] == f"railyard-{waiting['id']}"
    assert jobs.get_job(plat.service.engine, job_id=ids[3]["id"]).status == "QUEUED"

    # A cancelled job frees its place as well.
    plat.http.post(f"/v1/jobs/{ids[1]['id']}/cancel", headers=plat.headers(TEAM_A))
    plat.service.reconcile_all()
    assert jobs.get_job(plat.service.engine, job_id=ids[3]["id"]).status == "PENDING"


def test_admin_submissions_count_against_the_owner_team(plat):
    for _ in range(2):
        post(plat, "admin", plat.spec(TEAM_A))
    r = post(plat, TEAM_A, plat.spec(TEAM_A)).json()
    assert r["status"] == "QUEUED" and "team 'team-a'" in r["status_reason"]


def test_zero_means_no_limit(tmp_path):
    plat = ApiPlatform(tmp_path, max_concurrent_jobs_per_team=0)
    statuses = [post(plat, TEAM_A, plat.spec(TEAM_A)).json()["status"] for _ in range(3)]
    assert statuses == ["PENDING"] * 3
    assert tokens.has_admin(plat.service.engine)


def test_a_key_is_scoped_by_token_and_looked_up_after_authorization(plat):
    """A team named like the admin's cannot replay the admin's job by its key, and another
    token of one team starts its own job."""
    from railyard.jobstore import tokens

    admin_job = post(plat, "admin", plat.spec(TEAM_A), key="nightly").json()
    impostor, _ = tokens.issue(plat.service.engine, team="admin", admin=False)
    headers = {"Authorization": f"Bearer {impostor}", "Idempotency-Key": "nightly"}
    r = plat.http.post("/v1/jobs", json=plat.spec(TEAM_A), headers=headers)
    assert r.status_code == 403 and admin_job["id"] not in r.text
    r = plat.http.post("/v1/jobs", json=plat.spec("admin"), headers=headers)
    assert r.status_code == 201 and r.json()["id"] != admin_job["id"]
    second_token, _ = tokens.issue(plat.service.engine, team=TEAM_A)
    first = post(plat, TEAM_A, plat.spec(TEAM_A), key="daily").json()
    r = plat.http.post("/v1/jobs", json=plat.spec(TEAM_A),
                       headers={"Authorization": f"Bearer {second_token}",
                                "Idempotency-Key": "daily"})
    assert r.status_code == 201 and r.json()["id"] != first["id"]
