"""Admission by capacity (railyard.control.capacity): Railyard hands Ray only what a pool can
start now and keeps the rest QUEUED, with the reason, until jobs on the pool end. SQLite store,
in-memory execution backend."""

from __future__ import annotations

import concurrent.futures
import copy

import pytest

from railyard.control import capacity
from railyard.control.backend import BackendStatus
from railyard.jobstore import jobs
from railyard.jobstore.tables import JobStatus
from railyard.spec import parse_spec
from tests.fakes import TEAM_A, TEAM_B, ApiPlatform


@pytest.fixture()
def plat(tmp_path) -> ApiPlatform:
    capacity.forget()
    plat = ApiPlatform(tmp_path)
    plat.backend.pools = {"cpu": 1, "highmem": 1}
    plat.backend.cpus = {"cpu": 2.0, "highmem": 1.0}
    return plat


def _submit(plat: ApiPlatform, who: str = TEAM_A, **resources) -> dict:
    spec = plat.spec(who)
    if resources:
        spec = copy.deepcopy(spec)
        spec["train"]["resources"] = {**spec["train"].get("resources", {}), **resources}
    r = plat.http.post("/v1/jobs", json=spec, headers=plat.headers(who))
    assert r.status_code == 201, r.text
    return r.json()


def _finish(plat: ApiPlatform, job: dict, *, ray_too: bool = True) -> None:
    """The job's driver records SUCCEEDED (and, with ``ray_too``, Ray's job ends)."""
    job = jobs.get_job(plat.service.engine, job_id=job["id"]).model_dump()
    jobs.transition(plat.service.engine, job_id=job["id"], status=JobStatus.SUCCEEDED)
    if ray_too:
        plat.backend.statuses[job["ray_submission_id"]] = BackendStatus("SUCCEEDED")


def _status(plat: ApiPlatform, job: dict) -> tuple[str, str | None]:
    stored = jobs.get_job(plat.service.engine, job_id=job["id"])
    return stored.status, stored.status_reason


def test_a_job_asks_workers_times_cpus_per_worker():
    spec = {"train": {"resources": {"num_workers": 3, "cpus_per_worker": 2}}}
    assert capacity.job_cpus(spec) == 6
    assert capacity.job_cpus({"train": {}}) == 1


def test_jobs_beyond_the_pools_cpus_stay_queued_with_the_reason_until_one_ends(plat):
    first, second, third = (_submit(plat, who) for who in (TEAM_A, TEAM_B, TEAM_A))
    assert [first["status"], second["status"]] == ["PENDING", "PENDING"]
    assert third["status"] == "QUEUED" and third["ray_submission_id"] is None
    assert third["status_reason"] == ("queued: pool cpu is full (2 of 2 CPUs in use); it "
                                      "starts when jobs on the pool finish")
    assert len(plat.backend.submitted) == 2

    plat.service.reconcile_all()                       # nothing ended: still queued
    assert _status(plat, third)[0] == "QUEUED" and len(plat.backend.submitted) == 2

    _finish(plat, first)
    plat.service.reconcile_all()
    assert _status(plat, third) == ("PENDING", None)
    assert plat.backend.submitted[-1] == f"railyard-{third['id']}"


def test_a_job_ray_still_runs_counts_until_ray_ends_it(plat):
    """A driver records its result a moment before its Ray job ends: the pool stays full
    while Ray still lists the job alive."""
    first, _second, third = (_submit(plat) for _ in range(3))
    _finish(plat, first, ray_too=False)                # Ray still says PENDING (alive)
    plat.service.reconcile_all()
    assert _status(plat, third)[0] == "QUEUED"
    plat.backend.statuses[first["ray_submission_id"]] = BackendStatus("SUCCEEDED")
    plat.service.reconcile_all()
    assert _status(plat, third)[0] == "PENDING"


def test_a_job_wider_than_its_pool_runs_alone(plat):
    wide = _submit(plat, num_workers=4)
    assert wide["status"] == "PENDING"                 # 4 CPUs asked on a 2-CPU pool
    small = _submit(plat)
    assert small["status"] == "QUEUED"
    assert "(2 of 2 CPUs in use)" in small["status_reason"]
    _finish(plat, wide)
    plat.service.reconcile_all()
    assert _status(plat, small)[0] == "PENDING"


def test_pools_fill_apart(plat):
    for _ in range(2):
        _submit(plat)
    assert _submit(plat)["status"] == "QUEUED"
    assert _submit(plat, pool="highmem")["status"] == "PENDING"
    queued = _submit(plat, pool="highmem")
    assert queued["status_reason"].startswith("queued: pool highmem is full (1 of 1 CPUs")


def test_no_known_capacity_or_a_pool_without_nodes_holds_nothing_back(plat):
    plat.backend.cpus = {}
    assert all(_submit(plat)["status"] == "PENDING" for _ in range(4))
    plat.backend.cpus = {"cpu": 2.0}                   # highmem has no alive CPUs here
    assert all(_submit(plat, pool="highmem")["status"] == "PENDING" for _ in range(3))


def test_concurrent_submissions_from_many_teams_never_overfill_a_pool(plat):
    plat.backend.cpus = {"cpu": 3.0}

    def post(i: int) -> dict:
        return _submit(plat, (TEAM_A, TEAM_B)[i % 2])

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        made = list(pool.map(post, range(16)))
    assert sum(job["status"] == "PENDING" for job in made) == 3
    assert len(plat.backend.submitted) == 3
    for job in made:                                   # every queued job starts in turn
        if job["status"] == "PENDING":
            _finish(plat, job)
    plat.service.reconcile_all()
    assert len(plat.backend.submitted) == 6


def test_the_reason_names_the_spec_resources(plat):
    spec = parse_spec(plat.spec(TEAM_A))
    assert capacity.job_cpus(spec) == 1
    _submit(plat, num_workers=1, cpus_per_worker=1.5)
    job = _submit(plat, cpus_per_worker=1)
    assert job["status_reason"].startswith("queued: pool cpu is full (1.5 of 2 CPUs in use)")


def test_a_stale_view_of_ray_is_read_again_instead_of_holding_jobs_forever(plat, monkeypatch):
    """The reconciler saw a job alive on Ray; Ray ends it before the next tick: a read of a
    queued job lists Ray again rather than keep refusing for a job that is gone."""
    monkeypatch.setattr(capacity, "RAY_VIEW_MAX_AGE_S", 0.0)
    first, _second, third = (_submit(plat) for _ in range(3))
    _finish(plat, first, ray_too=False)
    plat.service.reconcile_all()                       # the view: first still alive on Ray
    assert _status(plat, third)[0] == "QUEUED"
    plat.backend.statuses[first["ray_submission_id"]] = BackendStatus("SUCCEEDED")
    calls = plat.backend.list_calls
    assert plat.http.get(f"/v1/jobs/{third['id']}",
                         headers=plat.headers(TEAM_A)).json()["status"] == "PENDING"
    assert plat.backend.list_calls > calls


def test_a_tick_stops_offering_a_pool_once_the_pool_is_full(plat, monkeypatch):
    """A burst leaves a thousand jobs queued for one full pool: the tick offers the first and
    not the rest behind it (each offer plans the queue and asks the pool again)."""
    running = [_submit(plat, who) for who in (TEAM_A, TEAM_B)]
    queued = [_submit(plat, who) for who in (TEAM_A, TEAM_B) * 3]
    assert [j["status"] for j in running + queued] == ["PENDING"] * 2 + ["QUEUED"] * 6
    offered: list[str] = []
    offer = plat.service._submit

    def counted(job, spec, **how):
        offered.append(job.id)
        return offer(job, spec, **how)

    monkeypatch.setattr(plat.service, "_submit", counted)
    plat.service.reconcile_all()
    assert offered == [queued[0]["id"]]
    _finish(plat, running[0])
    offered.clear()
    plat.service.reconcile_all()
    # The first is admitted into the freed CPU; the second finds the pool full again.
    assert offered == [queued[0]["id"], queued[1]["id"]]
    assert [_status(plat, j)[0] for j in queued[:3]] == ["PENDING", "QUEUED", "QUEUED"]
    assert _status(plat, queued[1])[1].startswith("queued: pool cpu is full (2 of 2 CPUs")


def test_a_new_job_waits_behind_the_pools_queue_when_a_cpu_frees_between_ticks(plat):
    running = [_submit(plat, who) for who in (TEAM_A, TEAM_B)]
    waiting = _submit(plat, TEAM_A)
    assert waiting["status"] == "QUEUED"
    _finish(plat, running[0])                 # a CPU is free; the reconciler has not ticked
    late = _submit(plat, TEAM_B)
    assert late["status"] == "QUEUED"
    assert late["status_reason"] == ("queued: pool cpu is full (jobs submitted earlier wait "
                                     "for it); it starts when jobs on the pool finish")
    plat.service.reconcile_all()              # the tick admits the queue in its order
    assert [_status(plat, j)[0] for j in (waiting, late)] == ["PENDING", "QUEUED"]
    _finish(plat, running[1])
    plat.service.reconcile_all()
    assert _status(plat, late)[0] == "PENDING"


def test_between_ticks_a_freed_pool_takes_the_next_queued_job_without_asking_ray(plat):
    running = [_submit(plat, who) for who in (TEAM_A, TEAM_B)]
    queued = [_submit(plat, who) for who in (TEAM_A, TEAM_B)]
    plat.backend.status_calls = plat.backend.list_calls = 0
    assert plat.service.release_if_room() is False            # the pool is still full
    assert [_status(plat, j)[0] for j in queued] == ["QUEUED", "QUEUED"]
    _finish(plat, running[0])
    assert plat.service.release_if_room() is True
    assert [_status(plat, j)[0] for j in queued] == ["PENDING", "QUEUED"]
    assert plat.backend.status_calls == 0
    assert plat.service.release_if_room() is False            # full again
    plat.service.settings.submission_paused = True
    _finish(plat, running[1])
    assert plat.service.release_if_room() is False            # paused: nothing goes out


def test_a_job_never_offered_here_has_no_known_pool(plat):
    """The tick skips only jobs whose pool this process decided (a restarted replica offers
    each queued job once rather than trusting the queue's estimate)."""
    running = [_submit(plat, who) for who in (TEAM_A, TEAM_B)]
    queued = _submit(plat)
    assert capacity.known_pool(queued["id"]) == "cpu"
    assert capacity.known_pool(running[0]["id"]) == "cpu"
    capacity.forget()
    assert capacity.known_pool(queued["id"]) is None
