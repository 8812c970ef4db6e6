"""Packs (railyard.execution.pack) with real processes and no Ray cluster: one launcher runs
several jobs' drivers at once, warm or cold; a packed driver whose job is cancelled in the
store exits by itself while the others go on; Ray's stop (SIGTERM) reaches every driver."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from railyard.jobstore import jobs
from railyard.jobstore.engine import get_engine
from railyard.jobstore.tables import JobStatus
from tests.polling import wait_for
from tests.unit.execution.test_warm_runner import (  # noqa: F401 - fixtures
    forked_driver,
    home,
    noop_job,
    warm_server,
)


def launch_pack(settings, job_ids: list[str], socket_path: str | None,
                submission_id: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "RAILYARD_HOME": str(settings.home)}
    env.pop("RAILYARD_WARM_SOCKET", None)
    if socket_path:
        env["RAILYARD_WARM_SOCKET"] = socket_path
    if submission_id:          # what Ray's JobSupervisor gives the pack's entrypoint
        env["RAY_JOB_CONFIG_JSON_ENV_VAR"] = json.dumps(
            {"metadata": {"job_submission_id": submission_id}})
    return subprocess.Popen([sys.executable, "-m", "railyard.execution.entrypoint", "--pack",
                             *job_ids], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def packed_jobs(settings, data, count: int, **waits) -> tuple[list[str], str]:
    """``count`` NoOp jobs submitted to Ray as one pack: (their ids, the pack's id)."""
    ids = [noop_job(settings, data, **waits) for _ in range(count)]
    pack_id = jobs.pack_submission_id([(job_id, 1) for job_id in ids])
    engine = get_engine(settings.resolved_database_url)
    for job_id in ids:
        jobs.update_job(engine, job_id=job_id, ray_submission_id=pack_id)
    return ids, pack_id


@pytest.mark.parametrize("warm", [True, False])
def test_a_pack_runs_every_job_to_the_end_warm_or_cold(home, request, warm):  # noqa: F811
    settings, data = home
    socket_path = request.getfixturevalue("warm_server") if warm else None
    ids, pack_id = packed_jobs(settings, data, 3)
    run = launch_pack(settings, ids, socket_path, pack_id)
    output, _ = run.communicate(timeout=300)
    assert run.returncode == 0, output
    engine = get_engine(settings.resolved_database_url)
    for job_id in ids:
        job = jobs.get_job(engine, job_id=job_id)
        assert job.status == "SUCCEEDED", (job_id, job.status, output)
        assert job.ray_submission_id == pack_id
        assert f"job {job_id} attempt 1 running in a " \
               f"{'warm' if warm else 'cold'} driver" in output


def test_a_cancelled_packed_job_stops_its_own_driver_and_the_others_go_on(
        home, warm_server):  # noqa: F811
    settings, data = home
    engine = get_engine(settings.resolved_database_url)
    (long_job,), pack_id = packed_jobs(settings, data, 1, train_s=120)
    short_job = noop_job(settings, data, train_s=4)
    jobs.update_job(engine, job_id=short_job, ray_submission_id=pack_id)
    run = launch_pack(settings, [long_job, short_job], warm_server, pack_id)
    driver = wait_for(lambda: forked_driver(long_job), 60, "the long job's driver")
    wait_for(lambda: jobs.get_job(engine, job_id=long_job).phase == "train", 60, "train")
    # What JobService.cancel writes; it leaves the pack's Ray job alone.
    jobs.transition(engine, job_id=long_job, status=JobStatus.CANCELLED,
                    message="cancelled by request")
    driver.wait(timeout=15)                       # within the watch interval, not 120 s
    output, _ = run.communicate(timeout=120)
    assert "is no longer this driver's to run" in output
    assert jobs.get_job(engine, job_id=long_job).status == "CANCELLED"
    assert jobs.get_job(engine, job_id=short_job).status == "SUCCEEDED", output
    assert run.returncode == 143                 # the pack reports the driver that was ended


def test_sigterm_reaches_every_driver_of_the_pack(home, warm_server):  # noqa: F811
    settings, data = home
    engine = get_engine(settings.resolved_database_url)
    ids, pack_id = packed_jobs(settings, data, 2, train_s=120)
    run = launch_pack(settings, ids, warm_server, pack_id)
    drivers = [wait_for(lambda job_id=job_id: forked_driver(job_id), 60, "a driver")
               for job_id in ids]
    wait_for(lambda: all(jobs.get_job(engine, job_id=job_id).phase == "train"
                         for job_id in ids), 60, "both in train")
    run.send_signal(signal.SIGTERM)
    run.communicate(timeout=30)
    assert run.returncode != 0
    for driver in drivers:
        driver.wait(timeout=10)
