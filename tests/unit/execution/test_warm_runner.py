"""Warm runners with real processes (no Ray cluster: the NoOp workflow on a local Parquet
file trains in the driver): a forked driver runs the job with the launcher's environment and
stdio, and dies with its launcher; without a server the launcher runs the job itself. A client
that sends half a request holds up no job, and only the server's user may connect."""

from __future__ import annotations

import copy
import os
import re
import signal
import socket
import stat
import subprocess
import sys

import psutil
import pytest

from railyard.config import Settings
from railyard.data.demo import sample_spec, write_fraud_dataset
from railyard.execution.warm_runner import process_name
from railyard.jobstore import jobs
from railyard.jobstore.engine import get_engine, migrate
from railyard.jobstore.tables import JobStatus
from railyard.spec import parse_spec
from tests.polling import wait_for


@pytest.fixture()
def home(tmp_path):
    settings = Settings(home=tmp_path / "home")
    migrate(settings.resolved_database_url)
    data = write_fraud_dataset(tmp_path / "fraud", 3000, files=1)
    return settings, data


@pytest.fixture()
def warm_server(tmp_path, home):
    settings, _ = home
    socket_path = f"/tmp/railyard-warm-test-{os.getpid()}.sock"
    env = {**os.environ, "RAILYARD_HOME": str(settings.home)}
    server = subprocess.Popen([sys.executable, "-m", "railyard.execution.warm_runner", "serve",
                               "--socket", socket_path], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)

    def listening() -> bool:
        assert server.poll() is None, server.stdout.read()
        return os.path.exists(socket_path)

    wait_for(listening, 120, "the warm runner to listen on its socket")
    yield socket_path
    server.terminate()
    server.wait(timeout=30)
    if os.path.exists(socket_path):
        os.unlink(socket_path)


def noop_job(settings: Settings, data, **waits) -> str:
    body = copy.deepcopy(sample_spec(str(data)))
    body["train"].update(workflow_name="NoOp", label="has_fraud_dispute", custom_params=waits)
    job = jobs.create_job(get_engine(settings.resolved_database_url), spec=parse_spec(body),
                           status=JobStatus.PENDING)
    return job.id


def launch(settings: Settings, job_id: str, socket_path: str | None) -> subprocess.Popen:
    env = {**os.environ, "RAILYARD_HOME": str(settings.home)}
    env.pop("RAILYARD_WARM_SOCKET", None)
    if socket_path:
        env["RAILYARD_WARM_SOCKET"] = socket_path
    return subprocess.Popen([sys.executable, "-m", "railyard.execution.entrypoint", job_id],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def forked_driver(job_id: str) -> psutil.Process | None:
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] == process_name(job_id):
            return proc
    return None


@pytest.mark.parametrize("warm", [True, False])
def test_a_job_runs_to_the_end_warm_or_cold(home, request, warm):
    settings, data = home
    socket_path = request.getfixturevalue("warm_server") if warm else None
    job_id = noop_job(settings, data)
    run = launch(settings, job_id, socket_path)
    output, _ = run.communicate(timeout=180)
    assert run.returncode == 0, output
    assert "phase publish finished" in output            # the driver wrote to our stdout
    job = jobs.get_job(get_engine(settings.resolved_database_url), job_id=job_id)
    assert job.status == "SUCCEEDED" and job.metrics["holdout"]["holdout_rows"] > 0


def launched_into_train(home, socket_path: str) -> tuple[subprocess.Popen, psutil.Process]:
    """A NoOp job launched warm and waiting in its train phase: (launcher, forked driver)."""
    settings, data = home
    job_id = noop_job(settings, data, train_s=60)
    run = launch(settings, job_id, socket_path)
    driver = wait_for(lambda: forked_driver(job_id), 60, "the forked driver")
    engine = get_engine(settings.resolved_database_url)
    wait_for(lambda: jobs.get_job(engine, job_id=job_id).phase == "train", 60, "train")
    return run, driver


def test_a_killed_launcher_takes_its_forked_driver_with_it(home, warm_server):
    run, driver = launched_into_train(home, warm_server)
    run.kill()
    driver.wait(timeout=10)                               # gone within the watch interval
    run.communicate(timeout=10)


def test_sigterm_reaches_the_forked_driver(home, warm_server):
    run, driver = launched_into_train(home, warm_server)
    run.send_signal(signal.SIGTERM)
    run.communicate(timeout=30)
    assert run.returncode != 0          # -SIGTERM, or 128 + SIGTERM from the driver's code
    driver.wait(timeout=10)


def stall(socket_path: str) -> socket.socket:
    """A client that connects, sends half a request and holds the connection open."""
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(socket_path)
    client.sendall(b'{"argv": ["job-')
    return client


def test_a_stalled_client_holds_up_no_job_and_is_dropped(home, warm_server):
    settings, data = home
    assert stat.S_IMODE(os.stat(warm_server).st_mode) == 0o600
    # More than a job could wait out one by one (each is dropped after REQUEST_TIMEOUT_S).
    stalled = [stall(warm_server) for _ in range(30)]
    try:
        job_id = noop_job(settings, data)
        run = launch(settings, job_id, warm_server)
        output, _ = run.communicate(timeout=120)
        assert run.returncode == 0, output
        assert "running in a warm driver (forked from pid" in output
        # the server's imports are frozen: no collection in the driver walks (and copies) them
        frozen = re.search(r"; (\d+) preloaded objects kept out of garbage collection", output)
        assert frozen and int(frozen.group(1)) > 100_000, output
        job = jobs.get_job(get_engine(settings.resolved_database_url), job_id=job_id)
        assert job.status == "SUCCEEDED"
        for client in stalled:                  # the server gave up on them
            client.settimeout(60)
            assert client.recv(1) == b""
    finally:
        for client in stalled:
            client.close()
