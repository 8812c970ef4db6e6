"""A burst of tiny jobs from several teams on the real cluster: every job SUCCEEDS exactly once,
and Railyard never has more of its jobs alive on Ray than the pool has CPUs for
(railyard.control.capacity)."""

from __future__ import annotations

import concurrent.futures
import threading

from ray.job_submission import JobSubmissionClient

from railyard.cluster import local_cluster
from railyard.jobstore import jobs
from tests.integration.support import noop_spec
from tests.polling import wait_for

TEAMS = ("burst-a", "burst-b", "burst-c")
JOBS = 12                  # six times what the cpu pool runs at once (bench_burst: 1,000)
CPU_POOL_CPUS = 2          # the session's cpu pool: one node of 2 CPUs (conftest)


def test_a_burst_from_three_teams_runs_each_job_once_within_the_pools_capacity(platform):
    local_cluster.use_ray_token(platform.settings)
    ray = JobSubmissionClient(platform.ray_address)
    ids: list[str] = []
    peak = {"alive": 0, "samples": 0}
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.3):
            listed = ray.list_jobs()
            mine = set(ids)
            alive = sum(1 for info in listed
                        if (info.metadata or {}).get("railyard_job_id") in mine
                        and str(info.status.value) in ("PENDING", "RUNNING"))
            peak["alive"] = max(peak["alive"], alive)
            peak["samples"] += 1

    def submit(i: int) -> str:
        spec = noop_spec(platform, f"burst_{i}")
        spec["owner"] = TEAMS[i % len(TEAMS)]
        with platform.client() as client:
            return client.submit(spec)["id"]

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with concurrent.futures.ThreadPoolExecutor(10) as pool:
            ids.extend(pool.map(submit, range(JOBS)))
        assert len(set(ids)) == JOBS
        with platform.client() as client:
            def all_ended() -> bool:
                # GETs reconcile: each read may submit a queued job the pool has room for.
                return all(client.get(job_id)["status"] in ("SUCCEEDED", "FAILED", "CANCELLED")
                           for job_id in ids)
            wait_for(all_ended, timeout=170, what="every burst job ended", interval=1.0)
    finally:
        stop.set()
        watcher.join(timeout=10)

    stored = [jobs.get_job(platform.engine, job_id=job_id) for job_id in ids]
    assert [job.status for job in stored] == ["SUCCEEDED"] * JOBS
    assert all(job.attempt == 1 for job in stored)
    submissions: dict[str, int] = {}
    for info in ray.list_jobs():
        job_id = (info.metadata or {}).get("railyard_job_id")
        if job_id in set(ids):
            submissions[job_id] = submissions.get(job_id, 0) + 1
    assert submissions == {job_id: 1 for job_id in ids}          # each ran on Ray once
    assert peak["samples"] > 0
    assert 1 <= peak["alive"] <= CPU_POOL_CPUS
