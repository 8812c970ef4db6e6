"""Job lifecycle against the real cluster: cancel, a killed driver, `ray job submit`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from ray.job_submission import JobStatus as RayJobStatus
from ray.job_submission import JobSubmissionClient

from railyard.cluster import local_cluster
from railyard.data.demo import sample_spec
from tests.integration.support import expected_counts, runner_processes
from tests.polling import wait_for


def long_spec(platform) -> dict:
    spec = sample_spec(platform.fraud_uri, source="s3")
    spec["train"]["custom_params"] = {"n_estimators": 100_000, "max_depth": 10,
                                      "learning_rate": 0.001, "min_child_weight": 1}
    return spec


def test_cancel_a_training_job_stops_its_ray_job(platform, client):
    job = client.submit(long_spec(platform))
    wait_for(lambda: client.get(job["id"])["phase"] == "train", 120, "the train phase")
    cancelled = client.cancel(job["id"])
    assert cancelled["status"] == "CANCELLED"
    ray = JobSubmissionClient(platform.ray_address)
    wait_for(lambda: ray.get_job_status(cancelled["ray_submission_id"]) == RayJobStatus.STOPPED,
             60, "Ray to stop the job")
    wait_for(lambda: not runner_processes(job["id"]), 60, "the driver process to exit")
    final = client.get(job["id"])
    assert final["status"] == "CANCELLED" and final["finished_at"]
    events = [e["message"] for e in client.events(job["id"]) if e["kind"] == "status"]
    assert events[-1] == "cancelled by request"


def test_killed_driver_becomes_failed_with_reason(platform, client):
    job = client.submit(long_spec(platform))
    wait_for(lambda: client.get(job["id"])["phase"] == "train", 120, "the train phase")
    procs = wait_for(lambda: runner_processes(job["id"]), 30, "the driver process")
    killed_at = time.monotonic()
    for proc in procs:
        proc.kill()
    final = wait_for(lambda: (j := client.get(job["id"]))["status"] == "FAILED" and j, 30,
                     "the job to be marked FAILED")
    assert time.monotonic() - killed_at < 30
    assert final["error_phase"] == "train"
    assert "driver ended" in final["error"]


def test_ray_job_submit_registers_and_tracks_the_job(platform, client, tmp_path):
    spec = sample_spec(platform.fraud_uri, source="s3")
    spec["trainer"] = "ray-job-submit-user"
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))
    env_vars = {**platform.settings.runtime_env_vars(),
                "RAILYARD_IN_PROCESS_READ_MAX_BYTES": "0"}   # force the Ray Data read path
    submission_id = f"manual-{os.getpid()}-{int(time.time())}"
    result = subprocess.run(
        [local_cluster.ray_executable(), "job", "submit", "--address", platform.ray_address,
         "--submission-id", submission_id, "--runtime-env-json",
         json.dumps({"env_vars": env_vars}), "--",
         "python", "-m", "railyard.execution.driver", "--spec", str(spec_file)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "railyard job id: job-" in result.stdout
    job_id = result.stdout.split("railyard job id: ")[1].split()[0]
    job = client.get(job_id)
    assert job["status"] == "SUCCEEDED" and job["origin"] == "ray-job-submit"
    assert job["ray_submission_id"] == submission_id
    assert (job["dataset"]["train_rows"], job["dataset"]["holdout_rows"]) == \
        expected_counts(platform.fraud)
    assert job["dataset"]["stats"]["read_engine"] == "ray.data"
    assert job_id in [j["id"] for j in client.list(owner=spec["owner"], limit=200)["jobs"]]


def test_ray_job_submit_with_a_bad_spec_exits_nonzero(platform, tmp_path):
    spec = sample_spec(platform.fraud_uri, source="s3")
    spec["data"]["filters"][0]["predicate"] = "Around"
    spec_file = tmp_path / "bad.json"
    spec_file.write_text(json.dumps(spec))
    result = subprocess.run(
        [local_cluster.ray_executable(), "job", "submit", "--address", platform.ray_address,
         "--runtime-env-json", json.dumps({"env_vars": platform.settings.runtime_env_vars()}),
         "--", "python", "-m", "railyard.execution.driver", "--spec", str(spec_file)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "data.filters.0.predicate" in result.stdout + result.stderr


@pytest.mark.parametrize("command", ["jobs", "status", "logs", "cancel"])
def test_cli_against_the_running_api(platform, client, tmp_path, command):
    env = {**os.environ, "RAILYARD_API_URL": platform.api_url, "RAILYARD_TOKEN": platform.token,
           "COLUMNS": "200"}
    exe = os.path.join(os.path.dirname(sys.executable), "railyard")
    if command == "jobs":
        spec_file = tmp_path / "spec.json"
        spec_file.write_text(json.dumps(sample_spec(platform.fraud_uri, source="s3")))
        run = subprocess.run([exe, "submit", str(spec_file), "--wait"], capture_output=True,
                             text=True, env=env, timeout=300)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "SUCCEEDED" in run.stdout and "auc" in run.stdout
    latest = client.list(limit=1)["jobs"][0]
    args = {"jobs": ["jobs", "--owner", latest["owner"]], "status": ["status", latest["id"]],
            "logs": ["logs", latest["id"]], "cancel": ["cancel", latest["id"]]}[command]
    run = subprocess.run([exe, *args], capture_output=True, text=True, env=env, timeout=120)
    if command == "cancel" and latest["status"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
        assert run.returncode == 1 and "ConflictError" in run.stderr
        return
    assert run.returncode == 0, run.stdout + run.stderr
    expected = {"jobs": latest["id"][:10], "status": f'"id": "{latest["id"]}"',
                "logs": "phase", "cancel": "CANCELLED"}[command]
    assert expected in run.stdout
