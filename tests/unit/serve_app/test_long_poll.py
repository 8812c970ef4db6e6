"""GET /v1/jobs/{id}?wait_s=: the long poll, on a SQLite store with an in-memory backend, and
railyard.control.job_watch's sharing of one query among its waiters."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from railyard.client.sdk import RailyardClient
from railyard.control.job_watch import JobWatch
from railyard.jobstore import jobs
from railyard.jobstore.tables import JobStatus
from tests.fakes import build_env


@pytest.fixture()
def env(tmp_path):
    return build_env(tmp_path)


def submitted(env) -> str:
    client, _, _, spec = env
    job = client.post("/v1/jobs", json=spec).json()
    assert job["status"] == "PENDING"
    return job["id"]


def later(seconds: float, action) -> threading.Thread:
    def run() -> None:
        time.sleep(seconds)
        action()
    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_the_answer_waits_for_the_job_to_change(env):
    client, service, _, _ = env
    job_id = submitted(env)
    changed = later(0.5, lambda: jobs.transition(
        service.engine, job_id=job_id, status=JobStatus.RUNNING, phase="fetch"))
    started = time.monotonic()
    got = client.get(f"/v1/jobs/{job_id}", params={"wait_s": 30, "since": "PENDING"})
    changed.join()
    assert got.status_code == 200, got.text
    assert (got.json()["status"], got.json()["phase"]) == ("RUNNING", "fetch")
    assert 0.4 < time.monotonic() - started < 20      # woken by the change, not the 30 s


def test_a_phase_change_wakes_a_waiter_of_the_same_status(env):
    client, service, _, _ = env
    job_id = submitted(env)
    jobs.transition(service.engine, job_id=job_id, status=JobStatus.RUNNING, phase="fetch")
    changed = later(0.3, lambda: jobs.update_job(service.engine, job_id=job_id, phase="split"))
    got = client.get(f"/v1/jobs/{job_id}", params={"wait_s": 30})   # since: as it is now
    changed.join()
    assert got.json()["phase"] == "split"


def test_an_unchanged_job_is_answered_after_wait_s(env):
    client, _, _, _ = env
    job_id = submitted(env)
    started = time.monotonic()
    got = client.get(f"/v1/jobs/{job_id}", params={"wait_s": 0.5, "since": "PENDING"})
    assert got.json()["status"] == "PENDING"
    assert time.monotonic() - started >= 0.5


def test_an_ended_or_already_changed_job_is_answered_at_once(env):
    client, service, _, _ = env
    job_id = submitted(env)
    started = time.monotonic()
    got = client.get(f"/v1/jobs/{job_id}", params={"wait_s": 30, "since": "RUNNING:train"})
    assert got.json()["status"] == "PENDING"
    jobs.transition(service.engine, job_id=job_id, status=JobStatus.CANCELLED)
    got = client.get(f"/v1/jobs/{job_id}", params={"wait_s": 30, "since": "CANCELLED"})
    assert got.json()["status"] == "CANCELLED"
    assert time.monotonic() - started < 20


@pytest.mark.parametrize(("params", "field"), [
    ({"wait_s": 61}, "wait_s"), ({"wait_s": -1}, "wait_s"),
    ({"wait_s": 5, "since": "RUNING"}, "since")])
def test_bad_long_poll_parameters_are_422_naming_the_field(env, params, field):
    client, _, _, _ = env
    got = client.get(f"/v1/jobs/{submitted(env)}", params=params)
    assert got.status_code == 422 and field in got.text, got.text


def test_a_missing_job_is_404_before_any_wait(env):
    client, _, _, _ = env
    assert client.get("/v1/jobs/job-nope", params={"wait_s": 30}).status_code == 404


def test_the_sdk_waits_through_long_polls(env):
    client, service, _, _ = env
    job_id = submitted(env)
    token = client.headers["Authorization"].removeprefix("Bearer ")
    sdk = RailyardClient("http://testserver", token=token, transport=client._transport)
    requests: list[str] = []
    sdk._http.event_hooks["request"].append(lambda r: requests.append(str(r.url)))
    steps = [lambda: jobs.transition(service.engine, job_id=job_id, status=JobStatus.RUNNING,
                                     phase="fetch"),
             lambda: jobs.update_job(service.engine, job_id=job_id, phase="train"),
             lambda: jobs.transition(service.engine, job_id=job_id,
                                     status=JobStatus.SUCCEEDED, phase=None)]
    driver = later(0.3, lambda: [time.sleep(0.3) or step() for step in steps])
    seen: list[tuple[str, str | None]] = []
    job = sdk.wait(job_id, timeout=60, poll=5.0,
                   on_update=lambda j: seen.append((j["status"], j["phase"])))
    driver.join()
    assert job["status"] == "SUCCEEDED"
    assert seen == [("PENDING", None), ("RUNNING", "fetch"), ("RUNNING", "train"),
                    ("SUCCEEDED", None)]
    # one read to start, then one long poll per change: no polling in between
    assert len(requests) == 4 and all("wait_s=" in url for url in requests[1:]), requests


def test_one_query_serves_every_waiter_and_the_rest_wait_no_more():
    queries: list[frozenset[str]] = []
    states = {f"job-{i}": ("RUNNING", "train") for i in range(10)}

    def read(ids):
        queries.append(frozenset(ids))
        return {i: states[i] for i in ids if i in states}

    watch = JobWatch(engine=None, interval_s=0.05, max_waiters=8,   # type: ignore[arg-type]
                     read_states=read)

    async def scenario() -> list[bool]:
        waits = [asyncio.create_task(watch.wait(f"job-{i}", "RUNNING:train", 0.5))
                 for i in range(10)]
        await asyncio.sleep(0.2)
        assert watch.waiting == 8
        states["job-3"] = ("SUCCEEDED", None)
        return await asyncio.gather(*waits)

    started = time.monotonic()
    answered = asyncio.run(scenario())
    assert answered == [True] * 8 + [False] * 2            # two found no room, at once
    assert watch.waiting == 0
    # ~0.5 s / 0.05 s ticks: one query per tick for all eight waiters, not one per waiter
    assert 5 <= len(queries) <= 0.5 / 0.05 + 3, len(queries)
    assert max(len(ids) for ids in queries) == 8
    assert time.monotonic() - started < 5
