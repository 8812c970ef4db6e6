"""Priorities, team quotas and the queue through the API (SQLite store, in-memory execution
backend): PUT/GET /v1/teams/{team}/quota, GET /v1/queue, and the order in which the reconciler
releases queued jobs."""

from __future__ import annotations

import pytest

from railyard.control import capacity
from railyard.control.backend import BackendStatus
from railyard.jobstore import jobs
from railyard.jobstore.tables import JobStatus
from tests.fakes import TEAM_A, TEAM_B, ApiPlatform


@pytest.fixture()
def plat(tmp_path) -> ApiPlatform:
    capacity.forget()
    return ApiPlatform(tmp_path, max_concurrent_jobs_per_team=0)


def submit(plat: ApiPlatform, who: str, priority: int | None = None, **resources) -> dict:
    spec = plat.spec(who)
    if priority is not None:
        spec["priority"] = priority
    spec["train"].setdefault("resources", {}).update(resources)
    r = plat.http.post("/v1/jobs", json=spec, headers=plat.headers(who))
    assert r.status_code == 201, r.text
    return r.json()


def put_quota(plat: ApiPlatform, team: str, who: str = "admin", **body):
    return plat.http.put(f"/v1/teams/{team}/quota", json=body, headers=plat.headers(who))


def finish(plat: ApiPlatform, job_id: str) -> None:
    jobs.transition(plat.service.engine, job_id=job_id, status=JobStatus.SUCCEEDED)


def status(plat: ApiPlatform, job_id: str) -> str:
    return jobs.get_job(plat.service.engine, job_id=job_id).status


def test_priority_out_of_range_is_a_clear_422(plat):
    for bad in (101, -1, "urgent"):
        spec = plat.spec(TEAM_A)
        spec["priority"] = bad
        r = plat.http.post("/v1/jobs", json=spec, headers=plat.headers(TEAM_A))
        assert r.status_code == 422
        assert r.json()["error"]["details"][0]["field"] == "priority"
    spec["priority"] = 101
    r = plat.http.post("/v1/jobs", json=spec, headers=plat.headers(TEAM_A))
    assert "give 0 (lowest) to 100 (highest)" in r.json()["error"]["message"]
    job = submit(plat, TEAM_A, 77)
    assert jobs.get_job(plat.service.engine, job_id=job["id"]).priority == 77
    assert jobs.get_job(plat.service.engine, job_id=submit(plat, TEAM_A)["id"]).priority == 50


def test_admin_sets_a_quota_and_a_team_reads_only_its_own(plat):
    r = put_quota(plat, TEAM_A, max_jobs=1, max_cpus=4)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["max_jobs"], body["max_cpus"]) == (1, 4)
    assert (body["override_max_jobs"], body["updated_by"]) == (1, body["updated_by"])
    mine = plat.http.get(f"/v1/teams/{TEAM_A}/quota", headers=plat.headers(TEAM_A))
    assert mine.status_code == 200 and mine.json()["max_jobs"] == 1
    assert plat.http.get(f"/v1/teams/{TEAM_B}/quota",
                         headers=plat.headers(TEAM_A)).status_code == 403
    assert put_quota(plat, TEAM_A, who=TEAM_A, max_jobs=99).status_code == 403
    # Another team gets the server's defaults (here: no job limit).
    other = plat.http.get(f"/v1/teams/{TEAM_B}/quota", headers=plat.headers(TEAM_B)).json()
    assert (other["max_jobs"], other["override_max_jobs"]) == (0, None)
    assert put_quota(plat, TEAM_A, max_jobs=-1).status_code == 422
    assert put_quota(plat, TEAM_A, max_jobs=1, surprise=2).status_code == 422


def test_quota_holds_and_a_later_high_priority_job_starts_first(plat):
    put_quota(plat, TEAM_A, max_jobs=1)
    first = submit(plat, TEAM_A)
    assert first["status"] == "PENDING"
    low = [submit(plat, TEAM_A, 10) for _ in range(2)]
    high = submit(plat, TEAM_A, 90)
    assert [j["status"] for j in low + [high]] == ["QUEUED"] * 3
    assert high["status_reason"] == ("queued: position 1 of 3 in pool cpu (team 'team-a' at its "
                                     "limit of 1 running)")
    plat.service.reconcile_all()
    assert jobs.get_job(plat.service.engine,
                        job_id=low[1]["id"]).status_reason.startswith("queued: position 3 of 3")

    finish(plat, first["id"])
    plat.service.reconcile_all()
    assert [status(plat, j["id"]) for j in (high, *low)] == ["PENDING", "QUEUED", "QUEUED"]
    assert jobs.get_job(plat.service.engine,
                        job_id=low[0]["id"]).status_reason.startswith("queued: position 1 of 2")
    finish(plat, high["id"])
    plat.service.reconcile_all()
    assert [status(plat, j["id"]) for j in low] == ["PENDING", "QUEUED"]


def test_a_tick_moves_every_place_behind_a_released_job_in_one_statement(plat):
    """A released job moves every queued job behind it up one place; with a thousand queued
    that was a thousand transactions per tick, now one statement for them all."""
    from sqlalchemy import event

    put_quota(plat, TEAM_A, max_jobs=1)
    first = submit(plat, TEAM_A)
    queued = [submit(plat, TEAM_A) for _ in range(6)]
    finish(plat, first["id"])
    statements: list[bool] = []

    def seen(conn, cursor, statement, parameters, context, executemany):
        if " ".join(statement.split()).upper().startswith("UPDATE JOB SET STATUS_REASON"):
            statements.append(executemany)

    event.listen(plat.service.engine, "before_cursor_execute", seen)
    try:
        plat.service.reconcile_all()
    finally:
        event.remove(plat.service.engine, "before_cursor_execute", seen)
    assert status(plat, queued[0]["id"]) == "PENDING"
    reasons = [jobs.get_job(plat.service.engine, job_id=j["id"]).status_reason
               for j in queued[1:]]
    assert [r.split(" in pool")[0] for r in reasons] == [
        f"queued: position {i} of 5" for i in range(1, 6)]
    assert statements == [True]
    # The timeline keeps one ``queued`` event per job: moving up is not a new event.
    events = jobs.list_events(plat.service.engine, job_id=queued[-1]["id"])
    assert [e.kind for e in events].count("queued") == 1


def test_a_team_without_limits_is_released_without_planning_the_queue(plat, monkeypatch):
    def whole_queue(engine):
        raise AssertionError("the whole queue was planned")

    with monkeypatch.context() as patched:
        patched.setattr(jobs, "list_active_work", whole_queue)
        assert [submit(plat, TEAM_B)["status"] for _ in range(3)] == ["PENDING"] * 3
    put_quota(plat, TEAM_B, max_jobs=3)
    held = submit(plat, TEAM_B)
    assert held["status"] == "QUEUED"
    assert held["status_reason"].startswith("queued: position 1 of 1 in pool cpu (team")


def test_a_tick_plans_the_queue_once_however_many_jobs_it_releases(plat, monkeypatch):
    """Each job the tick releases is re-checked against its team's quota alone, not by a new
    plan of the whole queue (with a thousand queued, a plan is ~40 ms)."""
    for team in (TEAM_A, TEAM_B):
        put_quota(plat, team, max_jobs=2)
    running = [submit(plat, team) for team in (TEAM_A, TEAM_A, TEAM_B, TEAM_B)]
    queued = [submit(plat, team) for team in (TEAM_A, TEAM_B) * 3]
    assert {j["status"] for j in queued} == {"QUEUED"}
    for job in running:
        finish(plat, job["id"])
    whole_queue = []
    light_rows = jobs.list_active_work

    def counted(engine, *, owner=None):
        if owner is None:
            whole_queue.append(1)
        return light_rows(engine, owner=owner)

    monkeypatch.setattr(jobs, "list_active_work", counted)
    plat.service.reconcile_all()
    assert [status(plat, j["id"]) for j in queued] == ["PENDING"] * 4 + ["QUEUED"] * 2
    assert len(whole_queue) == 2          # the release's plan and the places' refresh
    # A submit of the same team that took the room meanwhile is still seen: quota holds.
    monkeypatch.undo()
    late = submit(plat, TEAM_A, 95)
    assert late["status"] == "QUEUED"
    assert late["status_reason"].startswith("queued: position 1 of 3 in pool cpu (team")


def test_cpu_quota_holds(plat):
    put_quota(plat, TEAM_A, max_cpus=4)
    wide = submit(plat, TEAM_A, num_workers=3)
    assert wide["status"] == "PENDING"
    second = submit(plat, TEAM_A, num_workers=2)
    assert second["status"] == "QUEUED"
    assert "at its limit of 4 CPUs: 3 in use on Ray, this job needs 2" in \
        second["status_reason"]
    assert submit(plat, TEAM_A, num_workers=1)["status"] == "QUEUED"   # no overtaking
    finish(plat, wide["id"])
    plat.service.reconcile_all()
    assert status(plat, second["id"]) == "PENDING"


def test_fair_share_releases_two_teams_alternately(plat):
    for team in (TEAM_A, TEAM_B):
        put_quota(plat, team, max_jobs=1)
    running = [submit(plat, TEAM_A), submit(plat, TEAM_B)]
    queued_a = [submit(plat, TEAM_A) for _ in range(3)]
    queued_b = [submit(plat, TEAM_B) for _ in range(3)]
    q = plat.http.get("/v1/queue", headers=plat.headers("admin")).json()
    (pool,) = q["pools"]
    assert pool["pool"] == "cpu" and pool["queued"] == 6
    assert [j["owner"] for j in pool["jobs"]] == [TEAM_A, TEAM_B] * 3
    assert [j["position"] for j in pool["jobs"]] == list(range(1, 7))
    assert pool["jobs"][0]["job_id"] == queued_a[0]["id"]
    assert "team 'team-a' at its limit of 1 running" in pool["jobs"][0]["reason"]

    # A team sees its own jobs, at their places in the whole queue.
    mine = plat.http.get("/v1/queue", headers=plat.headers(TEAM_B)).json()["pools"][0]
    assert mine["queued"] == 6
    assert [(j["job_id"], j["position"]) for j in mine["jobs"]] == [
        (queued_b[0]["id"], 2), (queued_b[1]["id"], 4), (queued_b[2]["id"], 6)]

    # Raised quotas: one tick releases them in the queue's order, the teams alternating.
    for team in (TEAM_A, TEAM_B):
        put_quota(plat, team, max_jobs=3)
    before = len(plat.backend.submitted)
    plat.service.reconcile_all()
    sent = plat.backend.submitted[before:]
    assert sent == [f"railyard-{j['id']}" for j in (queued_a[0], queued_b[0],
                                                    queued_a[1], queued_b[1])]
    assert all(status(plat, j["id"]) == "PENDING" for j in running)


def test_queue_needs_a_token(plat):
    assert plat.http.get("/v1/queue").status_code == 401
    assert plat.http.get(f"/v1/teams/{TEAM_A}/quota").status_code == 401


def full_cpu_pool(tmp_path, **settings) -> ApiPlatform:
    """A platform whose cpu pool has 2 CPUs (capacity admission), no team job limit."""
    capacity.forget()
    plat = ApiPlatform(tmp_path, max_concurrent_jobs_per_team=0, **settings)
    plat.backend.pools = {"cpu": 1, "highmem": 1}
    plat.backend.cpus = {"cpu": 2.0, "highmem": 1.0}
    return plat


def test_an_urgent_job_preempts_the_lowest_priority_job_of_its_full_pool(tmp_path):
    plat = full_cpu_pool(tmp_path, preemption=True)
    low, mid = submit(plat, TEAM_A, 10), submit(plat, TEAM_A, 30)
    assert [low["status"], mid["status"]] == ["PENDING", "PENDING"]
    assert submit(plat, TEAM_B, 85)["status"] == "QUEUED"         # under 90: waits its turn
    assert plat.backend.stopped == []

    urgent = submit(plat, TEAM_B, 95)
    assert urgent["status"] == "QUEUED"
    assert plat.backend.stopped == [low["ray_submission_id"]]
    back = jobs.get_job(plat.service.engine, job_id=low["id"])
    assert (back.status, back.attempt, back.ray_submission_id) == ("QUEUED", 2, None)
    (first,) = jobs.list_attempts(plat.service.engine, job_id=low["id"])
    assert first.status == "CANCELLED" and first.failure_kind is None   # no retry budget used
    assert f"preempted by job {urgent['id']} (priority 95" in first.error
    timeline = plat.http.get(f"/v1/jobs/{low['id']}/events", headers=plat.headers(TEAM_A))
    assert any(f"preempted by job {urgent['id']}" in (e["message"] or "")
               for e in timeline.json())

    # Ray ends the stopped job: the urgent one starts at the next tick, the preempted one
    # waits in the queue (behind the priority-85 job) and runs again as attempt 2 later.
    plat.backend.statuses[low["ray_submission_id"]] = BackendStatus("STOPPED")
    plat.service.reconcile_all()
    assert status(plat, urgent["id"]) == "PENDING"
    assert status(plat, low["id"]) == "QUEUED"
    assert status(plat, mid["id"]) == "PENDING"
    assert len(plat.backend.stopped) == 1                          # one preemption only


def test_preemption_is_off_by_default(tmp_path):
    plat = full_cpu_pool(tmp_path)
    submit(plat, TEAM_A, 10), submit(plat, TEAM_A, 10)
    assert submit(plat, TEAM_B, 100)["status"] == "QUEUED"
    assert plat.backend.stopped == []
