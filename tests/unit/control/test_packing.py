"""Packs (RAILYARD_PACK_MAX_JOBS, railyard.control.packing): the jobs one release of the queue
admits to a pool go to Ray in packs, each one Ray job; a packed job is stopped alone (its
driver stops itself) and the pack with its last live job; a pack that ends without a job's
result retries that job. SQLite store, in-memory execution backend."""

from __future__ import annotations

from datetime import timedelta

import pytest

from railyard.control import capacity
from railyard.control.backend import BackendStatus
from railyard.jobstore import jobs
from railyard.jobstore.tables import JobStatus, utcnow
from tests.fakes import TEAM_A, TEAM_B, ApiPlatform


@pytest.fixture()
def plat(tmp_path) -> ApiPlatform:
    capacity.forget()
    plat = ApiPlatform(tmp_path, pack_max_jobs=3)
    plat.backend.pools = {"cpu": 1}
    plat.backend.cpus = {"cpu": 4.0}
    return plat


def queued_then_released(plat: ApiPlatform, count: int) -> list[str]:
    """``count`` jobs (one infrastructure retry each) submitted while submission is paused
    (all QUEUED), then released by one reconciler tick."""
    plat.service.settings.submission_paused = True
    ids = []
    for index in range(count):
        who = (TEAM_A, TEAM_B)[index % 2]
        spec = plat.spec(who)
        spec["lifecycle"] = {**spec.get("lifecycle", {}), "max_retries": 1}
        r = plat.http.post("/v1/jobs", json=spec, headers=plat.headers(who))
        assert r.status_code == 201 and r.json()["status"] == "QUEUED", r.text
        ids.append(r.json()["id"])
    plat.service.settings.submission_paused = False
    plat.service.reconcile_all()
    return ids


def stored(plat: ApiPlatform, job_id: str):
    return jobs.get_job(plat.service.engine, job_id=job_id)


def test_a_release_goes_to_ray_in_packs_up_to_the_limit_within_the_pools_cpus(plat):
    ids = queued_then_released(plat, 5)
    first_four, fifth = ids[:4], ids[4]
    assert len(plat.backend.submitted) == 2                 # a pack of 3 and one job alone
    pack_id, single = plat.backend.submitted
    assert jobs.is_pack(pack_id) and single == f"railyard-{first_four[3]}"
    assert plat.backend.packs[pack_id] == [(job_id, 1) for job_id in first_four[:3]]
    for job_id in first_four[:3]:
        job = stored(plat, job_id)
        assert (job.status, job.ray_submission_id, job.pool) == ("PENDING", pack_id, "cpu")
    events = jobs.list_events(plat.service.engine, job_id=first_four[0])
    assert any("packed with 2 other job(s)" in (e.message or "") for e in events)
    assert stored(plat, fifth).status == "QUEUED"            # 4 CPUs: the pool is full
    assert stored(plat, fifth).status_reason.startswith("queued: pool cpu is full")


def test_a_pack_holds_its_cpus_until_ray_ends_it(plat):
    ids = queued_then_released(plat, 5)
    pack_id = plat.backend.submitted[0]
    for job_id in ids[:2]:                                   # two drivers recorded results
        jobs.transition(plat.service.engine, job_id=job_id, status=JobStatus.SUCCEEDED)
    plat.service.reconcile_all()
    assert stored(plat, ids[4]).status == "QUEUED"           # the pack is still alive on Ray
    jobs.transition(plat.service.engine, job_id=ids[2], status=JobStatus.SUCCEEDED)
    plat.backend.statuses[pack_id] = BackendStatus("SUCCEEDED")
    plat.service.reconcile_all()
    assert stored(plat, ids[4]).status == "PENDING"


def test_cancelling_a_packed_job_leaves_the_pack_running_until_its_last_job(plat):
    ids = queued_then_released(plat, 3)
    pack_id = plat.backend.submitted[0]
    for job_id in ids[:2]:
        r = plat.http.post(f"/v1/jobs/{job_id}/cancel", headers=plat.headers("admin"))
        assert r.status_code == 200 and r.json()["status"] == "CANCELLED", r.text
        assert plat.backend.stopped == []                    # others of the pack still run
    r = plat.http.post(f"/v1/jobs/{ids[2]}/cancel", headers=plat.headers("admin"))
    assert r.status_code == 200, r.text
    assert plat.backend.stopped == [pack_id]


def test_a_pack_that_ends_without_a_jobs_result_retries_that_job_only(plat):
    ids = queued_then_released(plat, 3)
    pack_id = plat.backend.submitted[0]
    jobs.transition(plat.service.engine, job_id=ids[0], status=JobStatus.SUCCEEDED)
    # Stopped whole (a hung driver, or `ray job stop`): not the others' cancellation.
    plat.backend.statuses[pack_id] = BackendStatus("STOPPED")
    plat.service.reconcile_all()
    assert stored(plat, ids[0]).status == "SUCCEEDED"
    for job_id in ids[1:]:
        job = stored(plat, job_id)
        assert job.attempt == 2 and job.status in ("QUEUED", "PENDING"), job
        assert job.ray_submission_id != pack_id


def test_a_silent_packed_driver_stops_the_whole_pack(plat):
    ids = queued_then_released(plat, 3)
    pack_id = plat.backend.submitted[0]
    engine = plat.service.engine
    for job_id in ids:
        jobs.transition(engine, job_id=job_id, status=JobStatus.RUNNING, started_at=utcnow(),
                        heartbeat_at=utcnow())
    plat.backend.statuses[pack_id] = BackendStatus("RUNNING")
    late = utcnow() - timedelta(seconds=plat.settings.heartbeat_timeout_s + 5)
    jobs.update_job(engine, job_id=ids[1], heartbeat_at=late)
    plat.service.reconcile_all()
    assert plat.backend.stopped == [pack_id]                 # it cannot stop itself
    assert stored(plat, ids[1]).attempt == 2


def test_ray_unavailable_leaves_every_job_of_a_pack_queued(plat):
    plat.backend.available = False
    ids = queued_then_released(plat, 3)
    assert plat.backend.submitted == []
    for job_id in ids:
        job = stored(plat, job_id)
        assert (job.status, job.ray_submission_id) == ("QUEUED", None)
    plat.backend.available = True
    plat.service.reconcile_all()
    assert len(plat.backend.submitted) == 1 and jobs.is_pack(plat.backend.submitted[0])
    assert {stored(plat, job_id).status for job_id in ids} == {"PENDING"}


def test_without_packing_each_released_job_is_its_own_ray_job(tmp_path):
    capacity.forget()
    plat = ApiPlatform(tmp_path)
    plat.backend.pools, plat.backend.cpus = {"cpu": 1}, {"cpu": 4.0}
    ids = queued_then_released(plat, 3)
    assert plat.backend.submitted == [f"railyard-{job_id}" for job_id in ids]


def test_with_packs_every_ray_job_counts_a_packs_worth_so_the_queue_goes_out_in_packs(
        tmp_path):
    """A pool of 6 CPUs and packs of 3: two jobs submitted alone fill it (each counts 3), the
    rest wait, and the room one of them frees takes the next three as one pack, not one job
    at a time as CPUs free."""
    capacity.forget()
    plat = ApiPlatform(tmp_path, pack_max_jobs=3, max_concurrent_jobs_per_team=0)
    plat.backend.pools, plat.backend.cpus = {"cpu": 1}, {"cpu": 6.0}
    posted = [plat.submit(TEAM_A).json() for _ in range(5)]
    assert [job["status"] for job in posted] == ["PENDING"] * 2 + ["QUEUED"] * 3
    first = posted[0]
    jobs.transition(plat.service.engine, job_id=first["id"], status=JobStatus.SUCCEEDED)
    plat.backend.statuses[first["ray_submission_id"]] = BackendStatus("SUCCEEDED")
    plat.service.reconcile_all()
    pack_id = plat.backend.submitted[-1]
    assert jobs.is_pack(pack_id)
    assert plat.backend.packs[pack_id] == [(job["id"], 1) for job in posted[2:]]
