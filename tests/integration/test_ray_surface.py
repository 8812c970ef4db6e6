"""Ray's own surface is closed: its dashboard asks for Ray's token, no secret is in a runtime
env, a Ray process's environment or command line, and `ray job submit` works for whoever holds
the token (and not for anyone else)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import httpx
import psutil

from railyard.cluster import local_cluster
from tests.integration.support import noop_spec, runner_processes
from tests.polling import wait_for
from tests.servers import SECRET_ACCESS_KEY


def _ray_token(platform) -> str:
    return local_cluster.ray_token_path(platform.settings).read_text().strip()


def _secrets(platform, postgres) -> list[str]:
    return [postgres.password, SECRET_ACCESS_KEY]


def test_the_dashboard_asks_for_rays_token(platform):
    for path in ("/api/jobs/", "/api/serve/applications/", "/api/v0/nodes"):
        anonymous = httpx.get(f"{platform.ray_address}{path}", timeout=30)
        assert anonymous.status_code == 401, (path, anonymous.status_code)
        wrong = httpx.get(f"{platform.ray_address}{path}", timeout=30,
                          headers={"Authorization": "Bearer not-the-token"})
        assert wrong.status_code == 403, (path, wrong.status_code)
    token = local_cluster.ray_token_path(platform.settings)
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    # Ray's HTTP endpoints listen on loopback only.
    listening = {c.laddr.port: c.laddr.ip for c in psutil.net_connections("tcp")
                 if c.status == psutil.CONN_LISTEN}
    assert listening[int(platform.ray_address.rsplit(":", 1)[1])] == "127.0.0.1"


def test_no_secret_in_rays_runtime_envs_processes_or_command_lines(platform, client, postgres):
    job = client.wait(client.submit(noop_spec(platform, "surface"))["id"], timeout=180)
    assert job["status"] == "SUCCEEDED", job["error"]
    headers = {"Authorization": f"Bearer {_ray_token(platform)}"}
    exposed = "".join(httpx.get(f"{platform.ray_address}{path}", headers=headers,
                                timeout=30).text
                      for path in ("/api/jobs/", "/api/serve/applications/"))
    assert job["ray_submission_id"] in exposed            # we did read the runtime envs
    assert "RAILYARD_SECRETS_DIR" in exposed
    for secret in _secrets(platform, postgres):
        assert secret not in exposed
    home = str(platform.settings.home)
    checked = 0
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if process.pid == os.getpid() or not ("ray" in cmdline or "railyard" in cmdline) \
                or "moto_server" in cmdline or "pytest" in cmdline:
            continue
        try:
            environ = process.environ()
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        if environ.get("RAILYARD_HOME") != home:
            continue                                   # not one of this cluster's processes
        checked += 1
        blob = cmdline + json.dumps(environ)
        for secret in _secrets(platform, postgres):
            assert secret not in blob, (process.pid, cmdline[:200])
        assert "RAILYARD_DATABASE_URL" not in environ and "RAILYARD_TOKEN" not in environ
    assert checked >= 5, checked                     # GCS, raylets, dashboard, API, workers
    # The secrets directory is the owner's only.
    directory = platform.settings.resolved_secrets_dir
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir()} == {0o600}
    assert stat.S_IMODE(platform.settings.home.stat().st_mode) == 0o700


def test_ray_job_submit_needs_rays_token(platform, tmp_path):
    command = [local_cluster.ray_executable(), "job", "submit", "--address",
               platform.ray_address, "--", "python", "-c", "print('hello from ray job submit')"]
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    base["PATH"] = f"{os.path.dirname(sys.executable)}:{base['PATH']}"
    base["HOME"] = str(tmp_path)                       # no ~/.ray/auth_token to fall back on
    refused = subprocess.run(command, capture_output=True, text=True, timeout=300, env=base)
    assert refused.returncode != 0
    assert "hello from ray job submit" not in refused.stdout
    token_file = local_cluster.ray_token_path(platform.settings)
    allowed = subprocess.run(command, capture_output=True, text=True, timeout=300,
                             env={**base, "RAY_AUTH_MODE": "token",
                                  "RAY_AUTH_TOKEN_PATH": str(token_file)})
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert "hello from ray job submit" in allowed.stdout


def test_a_drivers_scratch_directory_is_removed_when_it_ends(platform, client):
    import glob
    import tempfile

    job = client.wait(client.submit(noop_spec(platform, "scratch"))["id"], timeout=180)
    assert job["status"] == "SUCCEEDED", job["error"]
    # SUCCEEDED is written by the driver before it exits and cleans up; wait for the exit.
    wait_for(lambda: not runner_processes(job["id"]), 60, "the job's driver to exit")
    assert glob.glob(os.path.join(tempfile.gettempdir(), f"railyard-{job['id']}-*")) == []


def test_rays_record_of_a_finished_job_is_deleted_after_retention_and_railyards_stays(
        platform, client):
    """railyard.control.ray_history over Ray's real Jobs API: the ended job is listed with its
    Railyard job id, deleted from Ray's job list, and Railyard still has its status and log."""
    from datetime import timedelta

    from ray.job_submission import JobSubmissionClient

    from railyard.control import ray_history
    from railyard.control.backend import RayJobsBackend
    from railyard.jobstore.tables import utcnow

    job = client.wait(client.submit(noop_spec(platform, "ray-history"))["id"], timeout=180)
    assert job["status"] == "SUCCEEDED", job["error"]
    sid = job["ray_submission_id"]
    ray = JobSubmissionClient(platform.ray_address)
    wait_for(lambda: ray.get_job_info(sid).end_time, 60, "Ray to record the job's end")
    backend = RayJobsBackend(platform.ray_address)

    class OnlyThisJob:
        """The real backend, with the other tests' jobs left out of the listing."""

        def list_ended(self, ended_before: float) -> dict[str, str]:
            return {s: j for s, j in backend.list_ended(ended_before).items() if j == job["id"]}

        def delete(self, submission_id: str) -> None:
            backend.delete(submission_id)

    retention = 60.0
    assert ray_history.prune(platform.engine, OnlyThisJob(), now=utcnow(),
                             retention_s=retention) == 0          # ended just now: kept
    later = utcnow() + timedelta(seconds=retention + 5)
    assert backend.list_ended(later.timestamp() - retention)[sid] == job["id"]
    assert ray_history.prune(platform.engine, OnlyThisJob(), now=later,
                             retention_s=retention) == 1
    assert sid not in {info.submission_id for info in ray.list_jobs()}
    backend.delete(sid)                                   # deleting again is not an error
    kept = client.get(job["id"])
    assert kept["status"] == "SUCCEEDED" and kept["ray_submission_id"] == sid
    assert client.logs(job["id"]).strip()                 # the durable log, not Ray's
