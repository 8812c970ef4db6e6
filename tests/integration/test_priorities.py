"""The queue on the real stack (Postgres, S3 server, Ray): with a team quota set through the
API forcing a queue, a later high-priority job starts before earlier low-priority ones, two
teams' queued jobs interleave, and the quotas hold while the jobs run. Tiny NoOp jobs."""

from __future__ import annotations

import uuid

import httpx
import pytest

from railyard.jobstore import jobs
from tests.integration.support import noop_spec
from tests.polling import wait_for

pytestmark = pytest.mark.integration


def api(platform) -> httpx.Client:
    return httpx.Client(base_url=platform.api_url, timeout=30,
                        headers={"Authorization": f"Bearer {platform.token}"})


def team(prefix: str) -> str:
    """A team of this test alone: the quotas set here touch no other test."""
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def set_quota(http: httpx.Client, name: str, **limits) -> dict:
    r = http.put(f"/v1/teams/{name}/quota", json=limits)
    assert r.status_code == 200, r.text
    return r.json()


def submit(client, platform, owner: str, name: str, priority: int = 50, **waits) -> dict:
    spec = noop_spec(platform, name, **waits)
    spec.update(owner=owner, priority=priority)
    return client.submit(spec)


def on_ray(client, job: dict) -> dict:
    """The job once it is submitted to Ray (the pool may still hold it back a moment)."""
    return wait_for(lambda: (j := client.get(job["id"]))["ray_submission_id"] and j, 120,
                    f"job {job['id']} to be submitted to Ray")


def submitted_at(platform, job_id: str):
    return jobs.as_utc(jobs.get_job(platform.engine, job_id=job_id).submitted_at)


def test_a_later_high_priority_job_starts_before_earlier_low_priority_ones(platform, client):
    owner = team("prio")
    with api(platform) as http:
        assert set_quota(http, owner, max_jobs=1)["max_jobs"] == 1
    first = on_ray(client, submit(client, platform, owner, "holds-the-slot", train_s=5))
    low = [submit(client, platform, owner, f"low-{i}", priority=10) for i in range(2)]
    high = submit(client, platform, owner, "urgent", priority=90)
    assert all(j["status"] == "QUEUED" for j in (*low, high))
    assert high["status_reason"].startswith("queued: position 1 of 3 in pool")
    assert f"team '{owner}' at its limit of 1 running" in high["status_reason"]

    done = [client.wait(j["id"], timeout=300) for j in (first, high, *low)]
    assert [j["status"] for j in done] == ["SUCCEEDED"] * 4
    order = sorted((first, high, *low), key=lambda j: submitted_at(platform, j["id"]))
    assert [j["id"] for j in order] == [j["id"] for j in (first, high, *low)]


def test_fair_share_interleaves_two_teams(platform, client):
    a, b = team("fair-a"), team("fair-b")
    with api(platform) as http:
        for name in (a, b):
            set_quota(http, name, max_jobs=1)
        holders = [on_ray(client, submit(client, platform, t, "holds", train_s=10))
                   for t in (a, b)]
        queued = [submit(client, platform, a, f"a-{i}") for i in range(2)] + \
            [submit(client, platform, b, f"b-{i}") for i in range(2)]
        assert all(j["status"] == "QUEUED" for j in queued)
        pools = http.get("/v1/queue").json()["pools"]
        mine = [j for pool in pools for j in pool["jobs"] if j["owner"] in (a, b)]
        assert [j["owner"] for j in mine] == [a, b, a, b]
        assert mine[0]["position"] < mine[1]["position"] < mine[2]["position"]
    done = [client.wait(j["id"], timeout=300) for j in holders + queued]
    assert all(j["status"] == "SUCCEEDED" for j in done)


def test_quotas_hold_while_the_jobs_run(platform, client):
    owner = team("quota")
    with api(platform) as http:
        quota = set_quota(http, owner, max_jobs=3, max_cpus=1)
        assert (quota["max_jobs"], quota["max_cpus"]) == (3, 1)
        made = [submit(client, platform, owner, f"q-{i}", train_s=1) for i in range(3)]
        assert [j["status"] for j in made[1:]] == ["QUEUED", "QUEUED"]
        assert "at its limit of 1 CPUs" in made[1]["status_reason"]
        most = 0

        def all_done() -> bool:
            nonlocal most
            active = [j for j in client.list(owner=owner, limit=50)["jobs"]
                      if j["status"] in ("PENDING", "RUNNING")]
            most = max(most, len(active))
            use = http.get(f"/v1/teams/{owner}/quota").json()
            assert use["cpus_on_ray"] <= 1
            return all(client.get(j["id"])["status"] == "SUCCEEDED" for j in made)

        wait_for(all_done, 300, "the quota team's three jobs to succeed", interval=0.5)
    assert most == 1
